/*
 * A backend that fails on demand, for the error-contract tests
 * (tests/unit/test_error_contract.cpp).
 *
 * "faulty" runs everything on another plugin (the inner one: a private copy of
 * the cpu plugin, FAULT_INNER_PATH, or the file MOERT_FAULT_INNER names) and
 * forwards every call to it, except the calls a test has armed to fail.  So a
 * model loads and runs on "faulty" exactly as on "cpu" until a fault fires:
 * an allocation that finds the device out of memory, a prepare, a transfer,
 * an execute or a synchronize that reports a device error, or an init that
 * fails.
 *
 * Kinds of call: init, alloc, write (buffer_write), read (buffer_read), copy
 * (buffer_copy), prepare, execute, synchronize.  Arming one kind with
 * (skip, count) lets `skip` more calls of that kind through and fails the
 * `count` after them (count < 0: every later call).  A failing execute first
 * runs the inner execute and then reports the error, the way a device that
 * fails part-way leaves whatever it wrote; the other kinds fail before
 * anything happens.
 *
 * The tests reach the controls through get_extension (backend_abi.h):
 *
 *   "fault_arm"   int (*)(const char* kind, int64_t skip, int64_t count)
 *                 returns 0, or -1 for an unknown kind
 *   "fault_reset" void (*)(void)              disarms every kind
 *   "fault_count" int64_t (*)(const char* what)
 *                 "buffers" and "executables": how many are alive now;
 *                 a kind: how many calls of it failed since the last reset
 *
 * MOERT_FAULT, read by init, arms kinds before anything else runs:
 * "kind[:skip[:count]]", comma-separated ("init" fails the first init).
 */
#define _POSIX_C_SOURCE 200809L /* strtok_r */

#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moert/backend_abi.h"

#ifndef FAULT_INNER_PATH
#error "FAULT_INNER_PATH must name the plugin that does the work"
#endif

enum { K_INIT, K_ALLOC, K_WRITE, K_READ, K_COPY, K_PREPARE, K_EXECUTE, K_SYNC, K_COUNT };
static const char* const kind_names[K_COUNT] = {"init", "alloc",   "write",   "read",
                                                "copy", "prepare", "execute", "synchronize"};

typedef struct fault {
  int64_t skip;   /* calls still to let through before failing */
  int64_t count;  /* calls to fail after those; < 0: all; 0: disarmed */
  int64_t failed; /* calls failed since the last reset */
} fault;

static fault g_faults[K_COUNT];
static int64_t g_live_buffers = 0;
static int64_t g_live_executables = 0;
static void* g_inner_library = NULL;
static const moert_backend_api* g_inner = NULL;
static int g_init_count = 0; /* successful inits not yet shut down */

static int kind_of(const char* name) {
  int k;
  if (!name) return -1;
  for (k = 0; k < K_COUNT; ++k)
    if (strcmp(name, kind_names[k]) == 0) return k;
  return -1;
}

static int fault_arm(const char* kind, int64_t skip, int64_t count) {
  int k = kind_of(kind);
  if (k < 0) return -1;
  g_faults[k].skip = skip < 0 ? 0 : skip;
  g_faults[k].count = count;
  return 0;
}

static void fault_reset(void) {
  int k;
  for (k = 0; k < K_COUNT; ++k) {
    g_faults[k].skip = 0;
    g_faults[k].count = 0;
    g_faults[k].failed = 0;
  }
}

static int64_t fault_count(const char* what) {
  int k;
  if (what && strcmp(what, "buffers") == 0) return g_live_buffers;
  if (what && strcmp(what, "executables") == 0) return g_live_executables;
  k = kind_of(what);
  return k < 0 ? -1 : g_faults[k].failed;
}

/* Whether this call of `kind` fails; counts it. */
static int fires(int k) {
  fault* f = &g_faults[k];
  if (f->count == 0) return 0;
  if (f->skip > 0) {
    --f->skip;
    return 0;
  }
  if (f->count > 0) --f->count;
  ++f->failed;
  return 1;
}

static moert_status injected(moert_error* err, int k, moert_status status, const char* what) {
  if (err)
    snprintf(err->message, sizeof(err->message), "injected fault: %s (%s call %lld)", what,
             kind_names[k], (long long)g_faults[k].failed);
  return status;
}

/* "kind[:skip[:count]],..." -> armed kinds; 0, or -1 for a malformed entry. */
static int arm_from_environment(void) {
  const char* env = getenv("MOERT_FAULT");
  char buffer[256];
  char* entry;
  char* save = NULL;
  if (!env || !*env) return 0;
  snprintf(buffer, sizeof(buffer), "%s", env);
  for (entry = strtok_r(buffer, ",", &save); entry; entry = strtok_r(NULL, ",", &save)) {
    char* colon = strchr(entry, ':');
    long long skip = 0, count = 1;
    if (colon) {
      *colon = '\0';
      if (sscanf(colon + 1, "%lld:%lld", &skip, &count) < 1) return -1;
    }
    if (fault_arm(entry, skip, count) != 0) return -1;
  }
  return 0;
}

/* The table ---------------------------------------------------------------- */

static moert_status fb_init(moert_error* err) {
  const char* path = getenv("MOERT_FAULT_INNER");
  moert_backend_entry_fn entry;
  moert_status status;
  if (arm_from_environment() != 0) {
    snprintf(err->message, sizeof(err->message),
             "MOERT_FAULT is malformed; expected kind[:skip[:count]],... with kinds init, alloc, "
             "write, read, copy, prepare, execute, synchronize");
    return MOERT_ERR_INVALID_ARGUMENT;
  }
  if (fires(K_INIT))
    return injected(err, K_INIT, MOERT_ERR_DEVICE, "the driver failed to initialise");
  if (g_init_count++ > 0) return MOERT_OK; /* a second registry shares this library */
  if (!path || !*path) path = FAULT_INNER_PATH;
  g_inner_library = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!g_inner_library) {
    --g_init_count;
    snprintf(err->message, sizeof(err->message), "cannot open the inner plugin %s: %s", path,
             dlerror());
    return MOERT_ERR_NO_DEVICE;
  }
  {
    /* POSIX's way from dlsym's object pointer to a function pointer. */
    void* symbol = dlsym(g_inner_library, "moert_backend_entry");
    memcpy(&entry, &symbol, sizeof(entry));
  }
  g_inner = entry ? entry(MOERT_ABI_MAJOR, MOERT_ABI_MINOR) : NULL;
  if (!g_inner) {
    --g_init_count;
    snprintf(err->message, sizeof(err->message), "%s is not a moert plugin of ABI %d.%d", path,
             MOERT_ABI_MAJOR, MOERT_ABI_MINOR);
    dlclose(g_inner_library);
    g_inner_library = NULL;
    return MOERT_ERR_NO_DEVICE;
  }
  status = g_inner->init(err);
  if (status != MOERT_OK) {
    --g_init_count;
    g_inner = NULL;
    dlclose(g_inner_library);
    g_inner_library = NULL;
  }
  return status;
}

static void fb_shutdown(void) {
  if (g_init_count == 0 || --g_init_count > 0) return;
  g_inner->shutdown();
  g_inner = NULL;
  dlclose(g_inner_library);
  g_inner_library = NULL;
}

static int32_t fb_device_count(void) { return g_inner ? g_inner->device_count() : 0; }

static moert_status fb_device_info(int32_t device, moert_device_info* info, moert_error* err) {
  char name[sizeof(info->name)];
  moert_status status = g_inner->device_info(device, info, err);
  if (status != MOERT_OK) return status;
  snprintf(name, sizeof(name), "fault injection over %.96s", info->name);
  memcpy(info->name, name, sizeof(name));
  return MOERT_OK;
}

static moert_status fb_buffer_alloc(int32_t device, uint64_t bytes, moert_buffer* out,
                                    moert_error* err) {
  moert_status status;
  if (fires(K_ALLOC)) {
    char what[96];
    snprintf(what, sizeof(what), "out of device memory allocating %llu bytes",
             (unsigned long long)bytes);
    return injected(err, K_ALLOC, MOERT_ERR_OUT_OF_MEMORY, what);
  }
  status = g_inner->buffer_alloc(device, bytes, out, err);
  if (status == MOERT_OK) ++g_live_buffers;
  return status;
}

static void fb_buffer_free(moert_buffer buffer) {
  if (!buffer) return;
  --g_live_buffers;
  g_inner->buffer_free(buffer);
}

static moert_status fb_buffer_write(moert_buffer dst, uint64_t offset, const void* src,
                                    uint64_t bytes, moert_error* err) {
  if (fires(K_WRITE))
    return injected(err, K_WRITE, MOERT_ERR_DEVICE, "the transfer to the device failed");
  return g_inner->buffer_write(dst, offset, src, bytes, err);
}

static moert_status fb_buffer_read(moert_buffer src, uint64_t offset, void* dst, uint64_t bytes,
                                   moert_error* err) {
  if (fires(K_READ))
    return injected(err, K_READ, MOERT_ERR_DEVICE, "the transfer from the device failed");
  return g_inner->buffer_read(src, offset, dst, bytes, err);
}

static moert_status fb_buffer_copy(moert_buffer src, uint64_t src_offset, moert_buffer dst,
                                   uint64_t dst_offset, uint64_t bytes, moert_error* err) {
  if (fires(K_COPY))
    return injected(err, K_COPY, MOERT_ERR_DEVICE, "the copy on the device failed");
  return g_inner->buffer_copy(src, src_offset, dst, dst_offset, bytes, err);
}

static moert_status fb_supports_node(int32_t device, const moert_graph_desc* graph,
                                     size_t node_index, int32_t* supported, moert_error* err) {
  return g_inner->supports_node(device, graph, node_index, supported, err);
}

static moert_status fb_prepare(int32_t device, const moert_graph_desc* graph, moert_executable* out,
                               moert_error* err) {
  moert_status status;
  if (fires(K_PREPARE))
    return injected(err, K_PREPARE, MOERT_ERR_DEVICE, "the kernel compiler failed");
  status = g_inner->prepare(device, graph, out, err);
  if (status == MOERT_OK) ++g_live_executables;
  return status;
}

static void fb_executable_free(moert_executable exe) {
  if (!exe) return;
  --g_live_executables;
  g_inner->executable_free(exe);
}

static moert_status fb_execute(moert_executable exe, const moert_execute_args* args,
                               moert_error* err) {
  moert_status status = g_inner->execute(exe, args, err);
  if (status != MOERT_OK) return status;
  if (fires(K_EXECUTE))
    return injected(err, K_EXECUTE, MOERT_ERR_DEVICE, "the device was lost while running");
  return MOERT_OK;
}

static moert_status fb_synchronize(int32_t device, moert_error* err) {
  if (fires(K_SYNC))
    return injected(err, K_SYNC, MOERT_ERR_DEVICE, "the device stopped responding");
  return g_inner->synchronize(device, err);
}

static moert_extension_fn fb_get_extension(const char* name) {
  if (!name) return NULL;
  if (strcmp(name, "fault_arm") == 0) return (moert_extension_fn)fault_arm;
  if (strcmp(name, "fault_reset") == 0) return (moert_extension_fn)fault_reset;
  if (strcmp(name, "fault_count") == 0) return (moert_extension_fn)fault_count;
  return NULL;
}

static const moert_backend_api g_api = {
    sizeof(moert_backend_api),
    MOERT_ABI_MAJOR,
    MOERT_ABI_MINOR,
    "faulty",
    "test",
    fb_init,
    fb_shutdown,
    fb_device_count,
    fb_device_info,
    fb_buffer_alloc,
    fb_buffer_free,
    fb_buffer_write,
    fb_buffer_read,
    fb_buffer_copy,
    fb_supports_node,
    fb_prepare,
    fb_executable_free,
    fb_execute,
    fb_synchronize,
    fb_get_extension,
};

MOERT_BACKEND_EXPORT const moert_backend_api* moert_backend_entry(uint32_t major, uint32_t minor) {
  (void)minor;
  return major == MOERT_ABI_MAJOR ? &g_api : NULL;
}
