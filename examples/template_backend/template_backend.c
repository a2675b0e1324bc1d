/*
 * A minimal moert backend: copy this file to start a new one.
 *
 * It runs on one "device", the host CPU, keeps buffers in host memory and
 * implements two ops, elementwise "add" and "mul" of f32 tensors that all
 * have the same shape.  Everything a real backend adds (a driver, streams,
 * more ops and dtypes) fits in the same functions.
 *
 * The only dependency is moert/backend_abi.h (C99); the library must export
 * moert_backend_entry and be named libmoert_backend_<name>.so.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moert/backend_abi.h"

#define TEMPLATE_BACKEND_NAME "template"
#define TEMPLATE_BACKEND_VERSION "0.1.0"

/* Writes a message for the runtime and returns `status`.  The runtime zeroes
 * err->message before every call and shows the text to the user, prefixed
 * with what it was doing: say what is wrong, not where. */
static moert_status set_error(moert_error* err, moert_status status, const char* message) {
  if (err != NULL) snprintf(err->message, sizeof(err->message), "%s", message);
  return status;
}

/* ------------------------------------------------------------------------ */
/* Lifetime                                                                 */

/* Called once, after loading and before anything else.  Return
 * MOERT_ERR_NO_DEVICE (with a message) when there is nothing to run on: the
 * runtime then lists the backend as unavailable and never calls it again
 * except to unload it.  On any error, release what init acquired: shutdown is
 * only called after a successful init. */
static moert_status template_init(moert_error* err) {
  (void)err;
  return MOERT_OK;
}

/* Called once before unloading, after every buffer and executable is freed. */
static void template_shutdown(void) {}

/* ------------------------------------------------------------------------ */
/* Devices                                                                  */

/* Number of devices; they are numbered 0..count-1 in every other call. */
static int32_t template_device_count(void) { return 1; }

/* Describes one device.  The runtime sets info->struct_size and zeroes the
 * rest; fill only the members that fit in it. */
static moert_status template_device_info(int32_t device, moert_device_info* info,
                                         moert_error* err) {
  if (device != 0) return set_error(err, MOERT_ERR_INVALID_ARGUMENT, "no such device");
  snprintf(info->name, sizeof(info->name), "%s", "host CPU (template backend)");
  info->kind = MOERT_DEVICE_CPU;
  info->total_memory = 0; /* unknown */
  info->free_memory = 0;
  return MOERT_OK;
}

/* ------------------------------------------------------------------------ */
/* Buffers: device memory, opaque to the runtime                            */

struct moert_buffer_impl {
  uint64_t bytes;
  unsigned char* data;
};

/* Allocates `bytes` (possibly 0) on `device`.  Contents are undefined. */
static moert_status template_buffer_alloc(int32_t device, uint64_t bytes, moert_buffer* out,
                                          moert_error* err) {
  moert_buffer buffer;
  if (device != 0) return set_error(err, MOERT_ERR_INVALID_ARGUMENT, "no such device");
  if (bytes > (uint64_t)SIZE_MAX) return set_error(err, MOERT_ERR_OUT_OF_MEMORY, "too large");
  buffer = (moert_buffer)malloc(sizeof(*buffer));
  if (buffer == NULL) return set_error(err, MOERT_ERR_OUT_OF_MEMORY, "out of host memory");
  buffer->bytes = bytes;
  buffer->data = (unsigned char*)malloc(bytes > 0 ? (size_t)bytes : 1);
  if (buffer->data == NULL) {
    free(buffer);
    return set_error(err, MOERT_ERR_OUT_OF_MEMORY, "out of host memory");
  }
  *out = buffer;
  return MOERT_OK;
}

/* Frees a buffer; NULL is a no-op.  No execution using it is in flight. */
static void template_buffer_free(moert_buffer buffer) {
  if (buffer == NULL) return;
  free(buffer->data);
  free(buffer);
}

/* Whether [offset, offset + bytes) lies inside the buffer, without overflow. */
static int in_bounds(moert_buffer buffer, uint64_t offset, uint64_t bytes) {
  return buffer != NULL && offset <= buffer->bytes && bytes <= buffer->bytes - offset;
}

/* Host -> device.  Complete when it returns (src may be reused at once). */
static moert_status template_buffer_write(moert_buffer dst, uint64_t offset, const void* src,
                                          uint64_t bytes, moert_error* err) {
  if (!in_bounds(dst, offset, bytes))
    return set_error(err, MOERT_ERR_INVALID_ARGUMENT, "write past the end of the buffer");
  memcpy(dst->data + offset, src, (size_t)bytes);
  return MOERT_OK;
}

/* Device -> host.  Complete when it returns, and ordered after every
 * execution already submitted that writes the buffer. */
static moert_status template_buffer_read(moert_buffer src, uint64_t offset, void* dst,
                                         uint64_t bytes, moert_error* err) {
  if (!in_bounds(src, offset, bytes))
    return set_error(err, MOERT_ERR_INVALID_ARGUMENT, "read past the end of the buffer");
  memcpy(dst, src->data + offset, (size_t)bytes);
  return MOERT_OK;
}

/* Device -> device, within one backend.  The regions may overlap. */
static moert_status template_buffer_copy(moert_buffer src, uint64_t src_offset, moert_buffer dst,
                                         uint64_t dst_offset, uint64_t bytes, moert_error* err) {
  if (!in_bounds(src, src_offset, bytes) || !in_bounds(dst, dst_offset, bytes))
    return set_error(err, MOERT_ERR_INVALID_ARGUMENT, "copy past the end of a buffer");
  memmove(dst->data + dst_offset, src->data + src_offset, (size_t)bytes);
  return MOERT_OK;
}

/* ------------------------------------------------------------------------ */
/* Graphs                                                                   */

typedef enum template_op { TEMPLATE_ADD, TEMPLATE_MUL } template_op;

static int same_shape(const moert_tensor_desc* a, const moert_tensor_desc* b) {
  uint32_t i;
  if (a->rank != b->rank) return 0;
  for (i = 0; i < a->rank; ++i)
    if (a->dims[i].fixed != b->dims[i].fixed || a->dims[i].symbols != b->dims[i].symbols) return 0;
  return 1;
}

/* NULL when this backend can run node `index` of `graph` (and sets *op), else
 * why not.  Shared by supports_node and prepare so they never disagree. */
static const char* check_node(const moert_graph_desc* graph, size_t index, template_op* op) {
  const moert_node_desc* node;
  const moert_tensor_desc *a, *b, *out;
  if (index >= graph->num_nodes) return "node index out of range";
  node = graph->nodes[index];
  if (node->op == NULL)
    return "the node has no op";
  else if (strcmp(node->op, "add") == 0)
    *op = TEMPLATE_ADD;
  else if (strcmp(node->op, "mul") == 0)
    *op = TEMPLATE_MUL;
  else
    return "the template backend runs only 'add' and 'mul'";
  /* Since ABI 1.3 the runtime says which version of the op's semantics it
   * means, and fills in every attribute's default: a node of a newer version,
   * or with an attribute this backend was not written for ('add' and 'mul'
   * have none), may mean something else, so it is refused. */
  if (MOERT_ABI_HAS_MEMBER(node, moert_node_desc, op_version) && node->op_version > 1)
    return "a newer version of the op than the template backend implements (1)";
  if (node->num_attrs != 0) return "an attribute the template backend does not know";
  if (node->num_inputs != 2 || node->num_outputs != 1) return "expected 2 inputs and 1 output";
  if (node->inputs[0] >= graph->num_tensors || node->inputs[1] >= graph->num_tensors ||
      node->outputs[0] >= graph->num_tensors)
    return "tensor index out of range";
  a = graph->tensors[node->inputs[0]];
  b = graph->tensors[node->inputs[1]];
  out = graph->tensors[node->outputs[0]];
  if (a->dtype != MOERT_DTYPE_F32 || b->dtype != MOERT_DTYPE_F32 || out->dtype != MOERT_DTYPE_F32)
    return "only f32 tensors are supported";
  if (!same_shape(a, b) || !same_shape(a, out))
    return "only same-shape operands are supported (no broadcasting)";
  if (out->kind == MOERT_TENSOR_CONSTANT) return "the output is a constant";
  return NULL;
}

/* Answers whether a node can run here; the runtime asks before partitioning
 * and sends the node elsewhere on a 0.  Must not fail for "no": reply
 * *supported = 0 with MOERT_OK (a reason in err->message helps debugging). */
static moert_status template_supports_node(int32_t device, const moert_graph_desc* graph,
                                           size_t node_index, int32_t* supported,
                                           moert_error* err) {
  template_op op;
  const char* why;
  if (device != 0) return set_error(err, MOERT_ERR_INVALID_ARGUMENT, "no such device");
  why = check_node(graph, node_index, &op);
  *supported = (why == NULL);
  if (why != NULL) set_error(err, MOERT_OK, why);
  return MOERT_OK;
}

/* What prepare keeps: the graph description is gone after it returns. */
typedef struct template_tensor {
  uint32_t rank;
  moert_dim dims[MOERT_MAX_RANK];
  float* constant; /* a copy of a CONSTANT tensor's data; NULL otherwise */
} template_tensor;

typedef struct template_node {
  template_op op;
  uint32_t a, b, out;
} template_node;

struct moert_executable_impl {
  size_t num_tensors;
  template_tensor* tensors;
  size_t num_nodes;
  template_node* nodes;
};

/* Frees an executable; NULL is a no-op.  No execution of it is in flight. */
static void template_executable_free(moert_executable exe) {
  size_t i;
  if (exe == NULL) return;
  for (i = 0; i < exe->num_tensors; ++i) free(exe->tensors[i].constant);
  free(exe->tensors);
  free(exe->nodes);
  free(exe);
}

/* Compiles the nodes of `graph` for `device`.  Every node was accepted by
 * supports_node, but check again: prepare must fail cleanly, never crash.
 * CONSTANT data is valid only during this call unless graph->flags has
 * MOERT_GRAPH_CONSTANTS_PERSIST (then until executable_free, and a backend on
 * host memory may use it in place); copying, as here, is always correct. */
static moert_status template_prepare(int32_t device, const moert_graph_desc* graph,
                                     moert_executable* out, moert_error* err) {
  moert_executable exe;
  size_t i;
  if (device != 0) return set_error(err, MOERT_ERR_INVALID_ARGUMENT, "no such device");
  exe = (moert_executable)calloc(1, sizeof(*exe));
  if (exe == NULL) return set_error(err, MOERT_ERR_OUT_OF_MEMORY, "out of host memory");
  /* +1: calloc(0) may return NULL, which would look like a failure. */
  exe->tensors = (template_tensor*)calloc(graph->num_tensors + 1, sizeof(template_tensor));
  exe->nodes = (template_node*)calloc(graph->num_nodes + 1, sizeof(template_node));
  if (exe->tensors == NULL || exe->nodes == NULL) {
    template_executable_free(exe);
    return set_error(err, MOERT_ERR_OUT_OF_MEMORY, "out of host memory");
  }
  exe->num_tensors = graph->num_tensors;
  exe->num_nodes = graph->num_nodes;

  for (i = 0; i < graph->num_nodes; ++i) {
    const moert_node_desc* node = graph->nodes[i];
    const char* why = check_node(graph, i, &exe->nodes[i].op);
    if (why != NULL) {
      template_executable_free(exe);
      return set_error(err, MOERT_ERR_UNSUPPORTED, why);
    }
    exe->nodes[i].a = node->inputs[0];
    exe->nodes[i].b = node->inputs[1];
    exe->nodes[i].out = node->outputs[0];
  }

  for (i = 0; i < graph->num_tensors; ++i) {
    const moert_tensor_desc* desc = graph->tensors[i];
    template_tensor* t = &exe->tensors[i];
    t->rank = desc->rank;
    memcpy(t->dims, desc->dims, sizeof(t->dims));
    if (desc->kind != MOERT_TENSOR_CONSTANT) continue;
    t->constant = (float*)malloc(desc->data_bytes > 0 ? (size_t)desc->data_bytes : 1);
    if (t->constant == NULL) {
      template_executable_free(exe);
      return set_error(err, MOERT_ERR_OUT_OF_MEMORY, "out of host memory");
    }
    memcpy(t->constant, desc->data, (size_t)desc->data_bytes);
  }
  *out = exe;
  return MOERT_OK;
}

/* Elements of a tensor once the symbols (T, P) have values. */
static int64_t element_count(const template_tensor* t, const int64_t* symbol_values) {
  int64_t count = 1;
  uint32_t d, s;
  for (d = 0; d < t->rank; ++d) {
    int64_t size = t->dims[d].fixed;
    for (s = 0; s < MOERT_NUM_SYMBOLS; ++s)
      if (t->dims[d].symbols & (1u << s)) size += symbol_values[s];
    count *= size;
  }
  return count;
}

/* The data of tensor `index` for this execution, NULL if its view is short. */
static float* tensor_data(const moert_executable exe, const moert_execute_args* args,
                          uint32_t index, int64_t count) {
  const moert_buffer_view* view;
  if (exe->tensors[index].constant != NULL) return exe->tensors[index].constant;
  view = &args->views[index];
  if (count < 0 || !in_bounds(view->buffer, view->offset, (uint64_t)count * sizeof(float)))
    return NULL;
  return (float*)(void*)(view->buffer->data + view->offset);
}

/* Runs the nodes in order with the given symbol values and one buffer view
 * per tensor.  May return before the work finishes (this one does not);
 * synchronize() waits for it. */
static moert_status template_execute(moert_executable exe, const moert_execute_args* args,
                                     moert_error* err) {
  size_t i;
  int64_t k;
  if (args->num_views != exe->num_tensors)
    return set_error(err, MOERT_ERR_INVALID_ARGUMENT, "one view per tensor expected");
  if (args->num_symbols < MOERT_NUM_SYMBOLS)
    return set_error(err, MOERT_ERR_INVALID_ARGUMENT, "symbol values missing");
  for (i = 0; i < exe->num_nodes; ++i) {
    const template_node* node = &exe->nodes[i];
    int64_t count = element_count(&exe->tensors[node->out], args->symbol_values);
    const float* a = tensor_data(exe, args, node->a, count);
    const float* b = tensor_data(exe, args, node->b, count);
    float* out = tensor_data(exe, args, node->out, count);
    if (a == NULL || b == NULL || out == NULL)
      return set_error(err, MOERT_ERR_INVALID_ARGUMENT, "a tensor's view is outside its buffer");
    if (node->op == TEMPLATE_ADD)
      for (k = 0; k < count; ++k) out[k] = a[k] + b[k];
    else
      for (k = 0; k < count; ++k) out[k] = a[k] * b[k];
  }
  return MOERT_OK;
}

/* Waits until every execution submitted to `device` has finished. */
static moert_status template_synchronize(int32_t device, moert_error* err) {
  if (device != 0) return set_error(err, MOERT_ERR_INVALID_ARGUMENT, "no such device");
  return MOERT_OK;
}

/* Optional (1.3): the plugin's own functions beyond the ABI, by name, e.g.
 * diagnostics or the hooks of its tests.  The template has none. */
static moert_extension_fn template_get_extension(const char* name) {
  (void)name;
  return NULL;
}

/* ------------------------------------------------------------------------ */
/* Entry point                                                              */

/* Built against this header's ABI version: sizeof() and the version macros
 * record which members this plugin knows. */
static const moert_backend_api template_api = {
    sizeof(moert_backend_api), MOERT_ABI_MAJOR,          MOERT_ABI_MINOR,
    TEMPLATE_BACKEND_NAME,     TEMPLATE_BACKEND_VERSION, template_init,
    template_shutdown,         template_device_count,    template_device_info,
    template_buffer_alloc,     template_buffer_free,     template_buffer_write,
    template_buffer_read,      template_buffer_copy,     template_supports_node,
    template_prepare,          template_executable_free, template_execute,
    template_synchronize,      template_get_extension,
};

/* The runtime passes its ABI version.  Return NULL to refuse a runtime this
 * plugin cannot serve (a different major version; or an older minor when the
 * plugin needs a member the runtime added later).  The table must stay valid
 * until the library is unloaded. */
MOERT_BACKEND_EXPORT const moert_backend_api* moert_backend_entry(uint32_t runtime_abi_major,
                                                                  uint32_t runtime_abi_minor) {
  (void)runtime_abi_minor;
  if (runtime_abi_major != MOERT_ABI_MAJOR) return NULL;
  return &template_api;
}
