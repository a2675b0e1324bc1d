/*
 * Test backends for the plugin loader.  One source, compiled once per
 * variant; each variant breaks exactly one rule of backend_abi.h (or none):
 *
 *   TB_GOOD          a working backend: one CPU device, host-memory buffers,
 *                    elementwise "add" of same-shape f32 tensors
 *   TB_NEWER_MINOR   the same, built as if against ABI 1.(MINOR+1): a bigger
 *                    table with members appended after the 1.0 ones
 *   TB_NO_ENTRY      no moert_backend_entry symbol
 *   TB_BAD_MAJOR     abi_major = MOERT_ABI_MAJOR + 1
 *   TB_REFUSE        entry returns NULL (needs a newer runtime)
 *   TB_NO_DEVICE     init returns MOERT_ERR_NO_DEVICE with a message
 *   TB_INIT_FAIL     init returns MOERT_ERR_DEVICE with a message
 *   TB_SMALL_TABLE   struct_size stops before the last 1.0 member
 *   TB_MISSING_FN    execute and synchronize are NULL
 *   TB_BAD_NAME      reports the name "bad:name", which no device spec can select
 *
 * TB_NAME is the backend's name.  Every variant also exports
 * moert_test_backend_counters() so a test can see init/shutdown calls.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moert/backend_abi.h"

#ifndef TB_NAME
#error "TB_NAME must be defined"
#endif
#ifdef TB_BAD_NAME
#undef TB_NAME
#define TB_NAME "bad:name"
#endif

/* Variants that leave a function or the table out still compile it. */
#define TB_MAYBE_UNUSED __attribute__((unused))

static int g_init_calls = 0;
static int g_shutdown_calls = 0;

MOERT_BACKEND_EXPORT void moert_test_backend_counters(int* init_calls, int* shutdown_calls) {
  *init_calls = g_init_calls;
  *shutdown_calls = g_shutdown_calls;
}

static moert_status fail(moert_error* err, moert_status status, const char* message) {
  if (err) snprintf(err->message, sizeof(err->message), "%s", message);
  return status;
}

static moert_status tb_init(moert_error* err) {
  ++g_init_calls;
#if defined(TB_NO_DEVICE)
  return fail(err, MOERT_ERR_NO_DEVICE,
              "no test device present (TESTDEV_VISIBLE_DEVICES is empty)");
#elif defined(TB_INIT_FAIL)
  return fail(err, MOERT_ERR_DEVICE, "driver version 3 is older than the required 4");
#else
  (void)err;
  return MOERT_OK;
#endif
}

static void tb_shutdown(void) { ++g_shutdown_calls; }

static int32_t tb_device_count(void) { return 1; }

static moert_status tb_device_info(int32_t device, moert_device_info* info, moert_error* err) {
  if (device != 0) return fail(err, MOERT_ERR_INVALID_ARGUMENT, "no such device");
  snprintf(info->name, sizeof(info->name), "%s", "moert test device");
  info->kind = MOERT_DEVICE_CPU;
  info->total_memory = 0;
  info->free_memory = 0;
  return MOERT_OK;
}

/* Buffers ---------------------------------------------------------------- */

struct moert_buffer_impl {
  uint64_t bytes;
  unsigned char* data;
};

static moert_status tb_buffer_alloc(int32_t device, uint64_t bytes, moert_buffer* out,
                                    moert_error* err) {
  moert_buffer b;
  if (device != 0) return fail(err, MOERT_ERR_INVALID_ARGUMENT, "no such device");
  b = (moert_buffer)malloc(sizeof(*b));
  if (!b) return fail(err, MOERT_ERR_OUT_OF_MEMORY, "out of host memory");
  b->bytes = bytes;
  b->data = (unsigned char*)malloc(bytes ? (size_t)bytes : 1);
  if (!b->data) {
    free(b);
    return fail(err, MOERT_ERR_OUT_OF_MEMORY, "out of host memory");
  }
  *out = b;
  return MOERT_OK;
}

static void tb_buffer_free(moert_buffer b) {
  if (!b) return;
  free(b->data);
  free(b);
}

static int in_range(moert_buffer b, uint64_t offset, uint64_t bytes) {
  return b && offset <= b->bytes && bytes <= b->bytes - offset;
}

static moert_status tb_buffer_write(moert_buffer dst, uint64_t offset, const void* src,
                                    uint64_t bytes, moert_error* err) {
  if (!in_range(dst, offset, bytes))
    return fail(err, MOERT_ERR_INVALID_ARGUMENT, "buffer_write out of range");
  memcpy(dst->data + offset, src, (size_t)bytes);
  return MOERT_OK;
}

static moert_status tb_buffer_read(moert_buffer src, uint64_t offset, void* dst, uint64_t bytes,
                                   moert_error* err) {
  if (!in_range(src, offset, bytes))
    return fail(err, MOERT_ERR_INVALID_ARGUMENT, "buffer_read out of range");
  memcpy(dst, src->data + offset, (size_t)bytes);
  return MOERT_OK;
}

static moert_status tb_buffer_copy(moert_buffer src, uint64_t src_offset, moert_buffer dst,
                                   uint64_t dst_offset, uint64_t bytes, moert_error* err) {
  if (!in_range(src, src_offset, bytes) || !in_range(dst, dst_offset, bytes))
    return fail(err, MOERT_ERR_INVALID_ARGUMENT, "buffer_copy out of range");
  memmove(dst->data + dst_offset, src->data + src_offset, (size_t)bytes);
  return MOERT_OK;
}

/* Graphs ----------------------------------------------------------------- */

static int same_dims(const moert_tensor_desc* a, const moert_tensor_desc* b) {
  uint32_t i;
  if (a->rank != b->rank) return 0;
  for (i = 0; i < a->rank; ++i)
    if (a->dims[i].fixed != b->dims[i].fixed || a->dims[i].symbols != b->dims[i].symbols) return 0;
  return 1;
}

/* NULL when node `index` is an f32 add this backend runs, else a reason. */
static const char* check_node(const moert_graph_desc* g, size_t index) {
  const moert_node_desc* n;
  const moert_tensor_desc *a, *b, *c;
  if (!g || index >= g->num_nodes) return "node index out of range";
  n = g->nodes[index];
  if (!n->op || strcmp(n->op, "add") != 0) return "only 'add' is supported";
  if (n->num_inputs != 2 || n->num_outputs != 1) return "add takes 2 inputs and 1 output";
  if (n->inputs[0] >= g->num_tensors || n->inputs[1] >= g->num_tensors ||
      n->outputs[0] >= g->num_tensors)
    return "tensor index out of range";
  a = g->tensors[n->inputs[0]];
  b = g->tensors[n->inputs[1]];
  c = g->tensors[n->outputs[0]];
  if (a->dtype != MOERT_DTYPE_F32 || b->dtype != MOERT_DTYPE_F32 || c->dtype != MOERT_DTYPE_F32)
    return "only f32 is supported";
  if (!same_dims(a, b) || !same_dims(a, c)) return "only same-shape add is supported";
  if (c->kind == MOERT_TENSOR_CONSTANT) return "a constant cannot be an output";
  return NULL;
}

static moert_status tb_supports_node(int32_t device, const moert_graph_desc* graph,
                                     size_t node_index, int32_t* supported, moert_error* err) {
  const char* why;
  if (device != 0) return fail(err, MOERT_ERR_INVALID_ARGUMENT, "no such device");
  why = check_node(graph, node_index);
  *supported = why == NULL;
  if (why) fail(err, MOERT_OK, why);
  return MOERT_OK;
}

typedef struct tb_tensor {
  uint32_t rank;
  moert_dim dims[MOERT_MAX_RANK];
  float* constant; /* owned copy of a constant's data, else NULL */
} tb_tensor;

typedef struct tb_node {
  uint32_t a, b, out;
} tb_node;

struct moert_executable_impl {
  size_t num_tensors;
  tb_tensor* tensors;
  size_t num_nodes;
  tb_node* nodes;
};

static void tb_executable_free(moert_executable exe) {
  size_t i;
  if (!exe) return;
  for (i = 0; i < exe->num_tensors; ++i) free(exe->tensors[i].constant);
  free(exe->tensors);
  free(exe->nodes);
  free(exe);
}

static int64_t numel(const tb_tensor* t, const int64_t* symbols) {
  int64_t n = 1;
  uint32_t d, s;
  for (d = 0; d < t->rank; ++d) {
    int64_t size = t->dims[d].fixed;
    for (s = 0; s < MOERT_NUM_SYMBOLS; ++s)
      if (t->dims[d].symbols & (1u << s)) size += symbols[s];
    n *= size;
  }
  return n;
}

static moert_status tb_prepare(int32_t device, const moert_graph_desc* graph, moert_executable* out,
                               moert_error* err) {
  moert_executable exe;
  size_t i;
  if (device != 0) return fail(err, MOERT_ERR_INVALID_ARGUMENT, "no such device");
  for (i = 0; i < graph->num_nodes; ++i) {
    const char* why = check_node(graph, i);
    if (why) return fail(err, MOERT_ERR_UNSUPPORTED, why);
  }
  exe = (moert_executable)calloc(1, sizeof(*exe));
  if (!exe) return fail(err, MOERT_ERR_OUT_OF_MEMORY, "out of host memory");
  exe->num_tensors = graph->num_tensors;
  exe->num_nodes = graph->num_nodes;
  exe->tensors = (tb_tensor*)calloc(graph->num_tensors + 1, sizeof(tb_tensor));
  exe->nodes = (tb_node*)calloc(graph->num_nodes + 1, sizeof(tb_node));
  if (!exe->tensors || !exe->nodes) {
    tb_executable_free(exe);
    return fail(err, MOERT_ERR_OUT_OF_MEMORY, "out of host memory");
  }
  for (i = 0; i < graph->num_tensors; ++i) {
    const moert_tensor_desc* t = graph->tensors[i];
    tb_tensor* dst = &exe->tensors[i];
    dst->rank = t->rank;
    memcpy(dst->dims, t->dims, sizeof(dst->dims));
    if (t->kind == MOERT_TENSOR_CONSTANT) {
      dst->constant = (float*)malloc(t->data_bytes ? (size_t)t->data_bytes : 1);
      if (!dst->constant) {
        tb_executable_free(exe);
        return fail(err, MOERT_ERR_OUT_OF_MEMORY, "out of host memory");
      }
      memcpy(dst->constant, t->data, (size_t)t->data_bytes);
    }
  }
  for (i = 0; i < graph->num_nodes; ++i) {
    const moert_node_desc* n = graph->nodes[i];
    exe->nodes[i].a = n->inputs[0];
    exe->nodes[i].b = n->inputs[1];
    exe->nodes[i].out = n->outputs[0];
  }
  *out = exe;
  return MOERT_OK;
}

/* The f32 elements of tensor `index`, or NULL when its view is unusable. */
static float* tensor_data(moert_executable exe, const moert_execute_args* args, uint32_t index,
                          int64_t count) {
  const moert_buffer_view* v;
  if (exe->tensors[index].constant) return exe->tensors[index].constant;
  v = &args->views[index];
  if (!in_range(v->buffer, v->offset, (uint64_t)count * sizeof(float))) return NULL;
  return (float*)(void*)(v->buffer->data + v->offset);
}

TB_MAYBE_UNUSED static moert_status tb_execute(moert_executable exe, const moert_execute_args* args,
                                               moert_error* err) {
  size_t i;
  int64_t k;
  if (args->num_views != exe->num_tensors)
    return fail(err, MOERT_ERR_INVALID_ARGUMENT, "wrong number of views");
  if (args->num_symbols < MOERT_NUM_SYMBOLS)
    return fail(err, MOERT_ERR_INVALID_ARGUMENT, "missing symbol values");
  for (i = 0; i < exe->num_nodes; ++i) {
    const tb_node* n = &exe->nodes[i];
    int64_t count = numel(&exe->tensors[n->out], args->symbol_values);
    const float* a = tensor_data(exe, args, n->a, count);
    const float* b = tensor_data(exe, args, n->b, count);
    float* c = tensor_data(exe, args, n->out, count);
    if (!a || !b || !c) return fail(err, MOERT_ERR_INVALID_ARGUMENT, "view out of range");
    for (k = 0; k < count; ++k) c[k] = a[k] + b[k];
  }
  return MOERT_OK;
}

TB_MAYBE_UNUSED static moert_status tb_synchronize(int32_t device, moert_error* err) {
  if (device != 0) return fail(err, MOERT_ERR_INVALID_ARGUMENT, "no such device");
  return MOERT_OK;
}

/* The table -------------------------------------------------------------- */

#define TB_V1_MEMBERS                                                                     \
  tb_init, tb_shutdown, tb_device_count, tb_device_info, tb_buffer_alloc, tb_buffer_free, \
      tb_buffer_write, tb_buffer_read, tb_buffer_copy, tb_supports_node, tb_prepare,      \
      tb_executable_free, tb_execute, tb_synchronize

#if defined(TB_NEWER_MINOR)
/* What a plugin built against a later 1.x header looks like to this runtime:
 * the 1.0 members, then members the runtime has never heard of.  The 1.0
 * table has no trailing padding (its last member is a pointer), so embedding
 * it gives exactly the offsets a longer struct in a newer header would. */
typedef struct tb_newer_api {
  moert_backend_api v1;
  moert_status (*future_function)(int32_t device, moert_error* err);
  uint64_t future_flags;
} tb_newer_api;

static moert_status tb_future_function(int32_t device, moert_error* err) {
  (void)device;
  return fail(err, MOERT_ERR_INTERNAL, "a runtime that does not know this member called it");
}

TB_MAYBE_UNUSED static const tb_newer_api g_api = {
    {sizeof(tb_newer_api), MOERT_ABI_MAJOR, MOERT_ABI_MINOR + 1, TB_NAME, "test-1.1", TB_V1_MEMBERS,
     NULL},
    tb_future_function,
    0xFFFFFFFFFFFFFFFFull};
#define TB_TABLE (&g_api.v1)
#else
/* Built as a 1.2 plugin is: the table ends before get_extension (1.3), and
 * says minor 2, so every test of these plugins also shows that a plugin of
 * the previous minor version loads and runs. */
TB_MAYBE_UNUSED static const moert_backend_api g_api = {
#if defined(TB_SMALL_TABLE)
    offsetof(moert_backend_api, synchronize),
#else
    offsetof(moert_backend_api, get_extension),
#endif
#if defined(TB_BAD_MAJOR)
    MOERT_ABI_MAJOR + 1,
#else
    MOERT_ABI_MAJOR,
#endif
    2,
    TB_NAME,
    "test-1.0",
#if defined(TB_MISSING_FN)
    tb_init,
    tb_shutdown,
    tb_device_count,
    tb_device_info,
    tb_buffer_alloc,
    tb_buffer_free,
    tb_buffer_write,
    tb_buffer_read,
    tb_buffer_copy,
    tb_supports_node,
    tb_prepare,
    tb_executable_free,
    NULL,
    NULL,
#else
    TB_V1_MEMBERS,
#endif
    NULL /* get_extension: beyond struct_size */
};
#define TB_TABLE (&g_api)
#endif

#if !defined(TB_NO_ENTRY)
MOERT_BACKEND_EXPORT const moert_backend_api* moert_backend_entry(uint32_t runtime_abi_major,
                                                                  uint32_t runtime_abi_minor) {
  (void)runtime_abi_major;
#if defined(TB_REFUSE)
  /* Needs a member that only a newer runtime provides. */
  if (runtime_abi_minor < MOERT_ABI_MINOR + 1) return NULL;
#else
  (void)runtime_abi_minor;
#endif
  return TB_TABLE;
}
#endif
