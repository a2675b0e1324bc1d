/*
 * moert backend plugin ABI.
 *
 * A backend is a shared library named libmoert_backend_<name>.so that exports
 * one C function, moert_backend_entry(), returning a table of function
 * pointers.  This header is standalone (C99, only <stddef.h>/<stdint.h>) so a
 * vendor can build a backend with any compiler against this one file.
 *
 * Versioning rules
 *  - MOERT_ABI_MAJOR must match exactly between the runtime and the plugin.
 *  - MOERT_ABI_MINOR may differ.  Minor versions only ever APPEND members to
 *    the end of structs; nothing is removed or reordered.
 *  - Every struct begins with `size_t struct_size`.  For a struct a party
 *    fills and hands over (the function table, graph descriptions, execute
 *    arguments) it is sizeof the struct as that party compiled it, and a
 *    reader never touches a member beyond it: use MOERT_ABI_HAS_MEMBER().
 *    For an output struct the caller owns (moert_device_info, moert_error),
 *    the caller sets struct_size to the size of its memory and the callee
 *    writes only the members that fit, leaving struct_size unchanged.
 *  - Arrays of structs are always passed as arrays of pointers, so a larger
 *    struct from a newer writer never breaks indexing.
 *
 * Errors are values: every fallible call returns a moert_status and, on
 * failure, writes a human-readable message into the moert_error it was given.
 *
 * Threading: the runtime never calls into one plugin from two threads at once.
 */
#ifndef MOERT_BACKEND_ABI_H
#define MOERT_BACKEND_ABI_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MOERT_ABI_MAJOR 1
#define MOERT_ABI_MINOR 4

/* The symbol every plugin exports (see moert_backend_entry_fn). */
#define MOERT_BACKEND_ENTRY_SYMBOL "moert_backend_entry"

#if defined(_WIN32)
#define MOERT_BACKEND_EXPORT __declspec(dllexport)
#else
#define MOERT_BACKEND_EXPORT __attribute__((visibility("default")))
#endif

/* True when `ptr` (a struct whose first member is struct_size) is large enough
 * to contain `member`. */
#define MOERT_ABI_HAS_MEMBER(ptr, type, member) \
  ((ptr)->struct_size >= offsetof(type, member) + sizeof(((type*)0)->member))

/* ------------------------------------------------------------------------ */
/* Status and errors                                                        */

typedef enum moert_status {
  MOERT_OK = 0,
  MOERT_ERR_INVALID_ARGUMENT = 1, /* bad shape, dtype, attribute, handle */
  MOERT_ERR_UNSUPPORTED = 2,      /* the backend cannot do this */
  MOERT_ERR_OUT_OF_MEMORY = 3,    /* allocation failed on the device */
  MOERT_ERR_DEVICE = 4,           /* the device or its driver failed */
  MOERT_ERR_NO_DEVICE = 5,        /* the backend found no usable device */
  MOERT_ERR_INTERNAL = 6          /* a bug */
} moert_status;

#define MOERT_ERROR_MESSAGE_CAPACITY 1024

/* Filled by the plugin on failure.  The runtime zeroes `message` first. */
typedef struct moert_error {
  size_t struct_size;
  char message[MOERT_ERROR_MESSAGE_CAPACITY];
} moert_error;

/* ------------------------------------------------------------------------ */
/* Tensors                                                                  */

/* Values are stable: they are stored in files and passed across the ABI. */
typedef enum moert_dtype {
  MOERT_DTYPE_F32 = 0,
  MOERT_DTYPE_F16 = 1,
  MOERT_DTYPE_BF16 = 2,
  MOERT_DTYPE_F8_E4M3 = 3, /* e4m3fn: no infinities, max 448 */
  MOERT_DTYPE_I8 = 4,
  MOERT_DTYPE_U8 = 5,
  MOERT_DTYPE_I32 = 6,
  MOERT_DTYPE_I64 = 7,
  MOERT_DTYPE_BOOL = 8
} moert_dtype;

#define MOERT_MAX_RANK 8

/* Symbolic dimensions.  A dimension's size is
 *   fixed + sum of the values of the symbols set in `symbols`
 * with the symbol values given at each execution.
 *   MOERT_SYM_TOKENS: tokens processed by this execution (T)
 *   MOERT_SYM_PAST:   tokens already held in the KV cache before it (P)
 *   MOERT_SYM_ROWS:   since 1.4, the rows an execution produces output for
 *                     (R, e.g. the logits of the last token of each sequence)
 * A 1.4 runtime passes three values; it places no tensor whose dims use
 * MOERT_SYM_ROWS on a plugin of an older minor version. */
#define MOERT_SYM_TOKENS 0u
#define MOERT_SYM_PAST 1u
#define MOERT_SYM_ROWS 2u
#define MOERT_NUM_SYMBOLS 3u

typedef struct moert_dim {
  int64_t fixed;
  uint32_t symbols; /* bit i set: add the value of symbol i */
} moert_dim;

typedef enum moert_tensor_kind {
  MOERT_TENSOR_ACTIVATION = 0, /* bound by the runtime at execute */
  MOERT_TENSOR_CONSTANT = 1,   /* data given at prepare; owned by backend after */
  MOERT_TENSOR_STATE = 2       /* persistent (KV cache), bound at execute */
} moert_tensor_kind;

typedef struct moert_tensor_desc {
  size_t struct_size;
  const char* name;
  moert_dtype dtype;
  uint32_t rank;
  moert_dim dims[MOERT_MAX_RANK];
  moert_tensor_kind kind;
  /* CONSTANT only: host bytes, row-major, valid for the duration of prepare.
   * A backend that needs them later copies (or uploads) them. */
  const void* data;
  uint64_t data_bytes;
} moert_tensor_desc;

/* The op-set version this header describes: the largest op_version of any op
 * in docs/ops.md.  Grows when an op's semantics change. */
#define MOERT_OPSET_VERSION 3

/* ------------------------------------------------------------------------ */
/* Nodes                                                                    */

typedef enum moert_attr_type {
  MOERT_ATTR_INT = 0,
  MOERT_ATTR_FLOAT = 1,
  MOERT_ATTR_STRING = 2,
  MOERT_ATTR_INTS = 3,
  MOERT_ATTR_FLOATS = 4
} moert_attr_type;

typedef struct moert_attr {
  size_t struct_size;
  const char* name;
  moert_attr_type type;
  int64_t i;            /* INT */
  double f;             /* FLOAT */
  const char* s;        /* STRING */
  const int64_t* ints;  /* INTS,   `count` entries */
  const double* floats; /* FLOATS, `count` entries */
  size_t count;
} moert_attr;

/* Index into moert_graph_desc::tensors; an absent optional input. */
#define MOERT_NO_TENSOR UINT32_MAX

typedef struct moert_node_desc {
  size_t struct_size;
  const char* op;   /* e.g. "linear"; see docs/ops.md for every op */
  const char* name; /* unique within the graph, for messages */
  const moert_attr* const* attrs;
  size_t num_attrs;
  const uint32_t* inputs; /* indices into the tensors array */
  size_t num_inputs;
  const uint32_t* outputs;
  size_t num_outputs;
  /* Since 1.3: the version of the op's semantics (docs/ops.md gives each op's
   * history; every op starts at 1 and the number grows when the op gains an
   * attribute or changes what it computes).  A plugin answers "unsupported"
   * for a node whose op_version is newer than the one its kernel implements,
   * and for an attribute it does not know.  Absent (a 1.2 runtime): 1.
   *
   * Also since 1.3, the runtime normalises attributes before they cross the
   * ABI: every optional attribute with a default is present with that
   * default, and enum strings and values have been checked against the op's
   * schema, so a plugin reads values and need not re-apply defaults. */
  uint32_t op_version;
} moert_node_desc;

/* moert_graph_desc::flags */
/* Constant data pointers stay valid until executable_free() (the runtime keeps
 * the weights mapped), so a backend may use them in place instead of copying. */
#define MOERT_GRAPH_CONSTANTS_PERSIST 1u

/* A partition: the nodes a backend is asked to run, in execution order, and
 * every tensor they touch. */
typedef struct moert_graph_desc {
  size_t struct_size;
  const moert_tensor_desc* const* tensors;
  size_t num_tensors;
  const moert_node_desc* const* nodes;
  size_t num_nodes;
  uint32_t flags; /* MOERT_GRAPH_* */
  /* Since 1.3: the op-set version of the runtime that described the graph
   * (MOERT_OPSET_VERSION as it was built), for messages and diagnostics; the
   * per-node op_version is what decides support. */
  uint32_t opset_version;
} moert_graph_desc;

/* ------------------------------------------------------------------------ */
/* Devices, buffers, executables                                            */

typedef enum moert_device_kind {
  MOERT_DEVICE_CPU = 0,
  MOERT_DEVICE_GPU = 1,
  MOERT_DEVICE_ACCELERATOR = 2,
  MOERT_DEVICE_OTHER = 3
} moert_device_kind;

typedef struct moert_device_info {
  size_t struct_size;
  char name[128]; /* e.g. "NVIDIA H200" */
  moert_device_kind kind;
  uint64_t total_memory; /* bytes; 0 if unknown */
  uint64_t free_memory;  /* bytes; 0 if unknown */
  /* Since 1.2: what the device supports, for people to read, as
   * comma-separated "key=value" items, e.g. "fp16=no, fp64=yes,
   * weights=f32/bf16/f16/f8_e4m3".  Empty if the plugin says nothing.  A
   * plugin writes it only when struct_size covers it (MOERT_ABI_HAS_MEMBER). */
  char capabilities[256];
} moert_device_info;

typedef struct moert_buffer_impl* moert_buffer;         /* opaque, plugin-owned */
typedef struct moert_executable_impl* moert_executable; /* opaque, plugin-owned */

/* A region of a buffer. */
typedef struct moert_buffer_view {
  moert_buffer buffer;
  uint64_t offset;
} moert_buffer_view;

typedef struct moert_execute_args {
  size_t struct_size;
  /* MOERT_NUM_SYMBOLS values, indexed by MOERT_SYM_*. */
  const int64_t* symbol_values;
  size_t num_symbols;
  /* One view per tensor of the prepared graph, same indexing.  Views of
   * ACTIVATION and STATE tensors are set; views of CONSTANT tensors have a
   * NULL buffer (the executable owns its constants). */
  const moert_buffer_view* views;
  size_t num_views;
  /* Since 1.1, optional (may be NULL): per-node profiling.  When set, the
   * plugin finishes each node before starting the next and writes its wall
   * time in seconds to node_seconds[i] (i indexes the prepared graph's nodes).
   * A plugin that does not profile leaves the array untouched, so the caller
   * fills it with a negative value first. */
  double* node_seconds;
  size_t num_node_seconds;
} moert_execute_args;

/* What get_extension returns: cast to the documented type before calling. */
typedef void (*moert_extension_fn)(void);

/* The function table a plugin returns.  Members may be appended in later
 * minor versions; check with MOERT_ABI_HAS_MEMBER before use. */
typedef struct moert_backend_api {
  size_t struct_size;
  uint32_t abi_major;
  uint32_t abi_minor;
  const char* name;    /* short name used on the command line: "cpu"; non-empty,
                          no ':' and no whitespace (devices are "name:index") */
  const char* version; /* free-form plugin version */

  /* Called once after loading.  MOERT_ERR_NO_DEVICE (with a message) means
   * the plugin loaded but has nothing to run on; the runtime lists it as
   * unavailable with that message. */
  moert_status (*init)(moert_error* err);
  /* Called before unloading, only if init() returned MOERT_OK; a failing
   * init() cleans up after itself. */
  void (*shutdown)(void);

  int32_t (*device_count)(void);
  moert_status (*device_info)(int32_t device, moert_device_info* info, moert_error* err);

  moert_status (*buffer_alloc)(int32_t device, uint64_t bytes, moert_buffer* out, moert_error* err);
  void (*buffer_free)(moert_buffer buffer);
  moert_status (*buffer_write)(moert_buffer dst, uint64_t offset, const void* src, uint64_t bytes,
                               moert_error* err);
  moert_status (*buffer_read)(moert_buffer src, uint64_t offset, void* dst, uint64_t bytes,
                              moert_error* err);
  moert_status (*buffer_copy)(moert_buffer src, uint64_t src_offset, moert_buffer dst,
                              uint64_t dst_offset, uint64_t bytes, moert_error* err);

  /* Whether node `node_index` of `graph` can run on `device` as described
   * (op, dtypes, shapes, attributes).  *supported is 1 or 0.  A 0 answer may
   * put a reason in err->message; the status stays MOERT_OK. */
  moert_status (*supports_node)(int32_t device, const moert_graph_desc* graph, size_t node_index,
                                int32_t* supported, moert_error* err);

  /* Compile/pack `graph` for `device`.  Constants are read during this call
   * only.  The graph description is not referenced after return. */
  moert_status (*prepare)(int32_t device, const moert_graph_desc* graph, moert_executable* out,
                          moert_error* err);
  void (*executable_free)(moert_executable exe);

  /* Run the nodes in order.  May return before the device finishes;
   * synchronize() waits.  Reads of buffers after synchronize() see results. */
  moert_status (*execute)(moert_executable exe, const moert_execute_args* args, moert_error* err);
  moert_status (*synchronize)(int32_t device, moert_error* err);

  /* Since 1.3, optional (may be NULL): a plugin's extensions, in the manner
   * of get_proc_address.  Returns the function named `name`, or NULL when the
   * plugin has none by that name.  The runtime never needs one; they carry
   * what is not part of this ABI (a plugin's own diagnostics and the hooks
   * its tests use), so nothing beyond the entry point is exported.  The
   * caller casts the result to the function type the plugin documents for
   * that name. */
  moert_extension_fn (*get_extension)(const char* name);
} moert_backend_api;

/* The entry point.  The runtime passes its own ABI version; a plugin may
 * return NULL if it cannot serve that runtime (the runtime then reports the
 * plugin as incompatible).  The returned table lives until unload. */
typedef const moert_backend_api* (*moert_backend_entry_fn)(uint32_t runtime_abi_major,
                                                           uint32_t runtime_abi_minor);

#ifdef __cplusplus
}
#endif

#endif /* MOERT_BACKEND_ABI_H */
