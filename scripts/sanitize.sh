#!/usr/bin/env bash
# The test suites under the sanitizers, each in its own build directory:
#
#   scripts/sanitize.sh asan   build-asan (MOERT_SANITIZE=ON): AddressSanitizer,
#                              UndefinedBehaviorSanitizer and LeakSanitizer.  Every
#                              C++ test (CTest), then the Python suite with the ASan
#                              runtime preloaded into the interpreter.
#   scripts/sanitize.sh tsan   build-tsan (MOERT_SANITIZE_THREAD=ON): ThreadSanitizer
#                              on the tests that run threads (see TSAN_* below).
#   scripts/sanitize.sh all    both (the default).
#
# Exits nonzero when a test fails or a sanitizer reported anything, even in a
# process whose failure a test expected (a CLI run that must fail, say): every
# report is written to <build>/sanitizer-reports/, and the run fails, printing
# them, when any is there.
#
# gcc only (the runtimes preloaded into Python are gcc's).  CUDA is left out:
# there is no GPU to run it on, and nvcc does not instrument device code.
# Suppressions (sanitizers/*.supp) cover only reports inside uninstrumented
# third-party libraries; each entry says why.
#
# Environment:
#   ASAN_BUILD_DIR, TSAN_BUILD_DIR  build directories (build-asan, build-tsan)
#   JOBS                            parallel compile jobs and tests (nproc)
#   PYTHON                          the interpreter of the Python tests (python3)
#   SANITIZE_PYTHON                 "full" (default): the whole Python suite under ASan;
#                                   "none": C++ only
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MODE=${1:-all}
JOBS=${JOBS:-$(nproc)}
ASAN_BUILD_DIR=$(realpath -m "${ASAN_BUILD_DIR:-build-asan}")
TSAN_BUILD_DIR=$(realpath -m "${TSAN_BUILD_DIR:-build-tsan}")
SANITIZE_PYTHON=${SANITIZE_PYTHON:-full}
SUPP=$ROOT/sanitizers
export CC=${CC:-gcc} CXX=${CXX:-g++}

case "$MODE" in
  asan | tsan | all) ;;
  *)
    echo "usage: $0 [asan|tsan|all]" >&2
    exit 2
    ;;
esac

# The real interpreter, not a wrapper script (pyenv's shims are shell
# scripts, which should not run with a sanitizer runtime preloaded).
PYTHON_EXE=$("${PYTHON:-python3}" -c 'import sys; print(sys.executable)')

# A sanitizer runtime of the compiler, as a path LD_PRELOAD accepts.
runtime_lib() {
  local path
  path=$("$CXX" -print-file-name="$1")
  if [ ! -e "$path" ]; then
    echo "sanitize: $CXX has no $1" >&2
    exit 1
  fi
  readlink -f "$path"
}

# ThreadSanitizer needs the address-space layout it was built for; kernels
# with more mmap randomisation than gcc 12's TSan knows make it abort with
# "unexpected memory mapping".  Running without ASLR avoids that where the
# container permits it (setarch -R); elsewhere run as is.
NO_ASLR=()
if setarch "$(uname -m)" -R true 2>/dev/null; then NO_ASLR=(setarch "$(uname -m)" -R); fi

SECONDS_AT=$SECONDS
phase() {  # prints the time the previous phase took, then names the next one
  local now=$SECONDS
  if [ -n "${PHASE:-}" ]; then echo "sanitize: $PHASE took $((now - SECONDS_AT)) s"; fi
  PHASE=$1
  SECONDS_AT=$now
  [ -z "$1" ] || echo "sanitize: $1"
}

# Fails (prints every report) when a sanitizer reported anything in $1.  Files
# holding only warnings (ASan's "failed to allocate" for an allocation that
# returned null as the program asked) are not reports.
REPORT_PATTERN='SUMMARY: |runtime error: |fatal error|FATAL: |Tracer caught signal'
check_reports() {
  local dir=$1 f found=0
  for f in "$dir"/*; do
    if [ ! -f "$f" ] || ! grep -qE "$REPORT_PATTERN" "$f"; then continue; fi
    found=1
    echo "==================== sanitizer report: $f"
    cat "$f"
  done
  if [ $found = 1 ]; then
    echo "sanitize: reports found in $dir" >&2
    return 1
  fi
  echo "sanitize: no reports in $dir"
}

# configure <dir> <cmake options...>.  RelWithDebInfo: optimised as CI's
# normal build, with line numbers in the reports.  Warnings are not errors
# here (the normal build checks them; the sanitizers add some of their own).
configure() {
  local dir=$1 compilers=()
  shift
  # The compilers only on the first configure: naming them again differently
  # spelled would make CMake throw the cache away.
  [ -f "$dir/CMakeCache.txt" ] || compilers=(-DCMAKE_C_COMPILER="$CC" -DCMAKE_CXX_COMPILER="$CXX")
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMOERT_WERROR=OFF \
    -DMOERT_BACKEND_CUDA=OFF "${compilers[@]}" "$@" >/dev/null
  # A cache CMake had to throw away (another compiler) loses the options
  # above: make sure the sanitizer is really on.
  local option
  for option in "$@"; do
    case "$option" in
      -DMOERT_SANITIZE*=ON)
        option=${option#-D}
        if ! grep -q "^${option%=ON}:BOOL=ON" "$dir/CMakeCache.txt"; then
          echo "sanitize: $dir is not configured with $option; remove it and run again" >&2
          exit 1
        fi
        ;;
    esac
  done
}

status=0

# ---------------------------------------------------------------------------
# ASan + UBSan + LSan

run_asan() {
  local build=$ASAN_BUILD_DIR reports
  reports=$build/sanitizer-reports
  rm -rf "$reports"
  mkdir -p "$reports"
  # halt_on_error: the first error ends the process (UBSan: the build uses
  # -fno-sanitize-recover).  log_path, log_exe_name: reports go to files named
  # after the program, checked at the end.
  # allocator_may_return_null: the backend contract tests ask for absurd
  # allocations and expect the plugin's out-of-memory error, not an abort.
  # intercept_tls_get_addr=0: gcc 12's LeakSanitizer misreads glibc's dynamic
  # TLS blocks (of the dlopen'd plugins and oneDNN) and its tracer crashes
  # ("Tracer caught signal 11"); without the interceptor it works.
  # detect_stack_use_after_return stays off: gcc's fake stack frames are only
  # 32-byte aligned, and the AVX-512 kernels' 64-byte aligned locals fault.
  local asan="detect_leaks=1:halt_on_error=1:allocator_may_return_null=1:intercept_tls_get_addr=0"
  asan+=":check_initialization_order=1:strict_init_order=1"
  asan+=":suppressions=$SUPP/asan.supp:log_path=$reports/asan:log_exe_name=1"
  export ASAN_OPTIONS=$asan
  export LSAN_OPTIONS="suppressions=$SUPP/lsan.supp:print_suppressions=0"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:suppressions=$SUPP/ubsan.supp:log_path=$reports/ubsan:log_exe_name=1"

  phase "asan: configure and build $build"
  configure "$build" -DMOERT_SANITIZE=ON -DMOERT_SANITIZE_THREAD=OFF
  # Building runs every test binary once (gtest_discover_tests), under ASan
  # with the options above.
  cmake --build "$build" -j "$JOBS"

  phase "asan: C++ tests (ctest)"
  # The Python suite runs below, with its own environment.
  ctest --test-dir "$build" --output-on-failure -j "$JOBS" -E '^python_' || status=1

  if [ "$SANITIZE_PYTHON" != none ]; then
    phase "asan: Python tests"
    # CPython is not instrumented and does not free everything at exit by
    # design: no leak checking in the interpreter (the C++ tests check leaks).
    # The moert CLI the tests start inherits these options.
    ASAN_OPTIONS="$ASAN_OPTIONS:detect_leaks=0" \
      LD_PRELOAD="$(runtime_lib libasan.so):$(runtime_lib libubsan.so)" \
      MOERT_CLI="$build/bin/moert" MOERT_PYTHON_DIR="$build/python" \
      PYTHONPATH="$ROOT/python" \
      "$PYTHON_EXE" -m pytest -q -p no:cacheprovider tests/python \
      --ignore=tests/python/test_transformers_parity.py || status=1
  fi
  phase ""
  check_reports "$reports" || status=1
  unset ASAN_OPTIONS LSAN_OPTIONS UBSAN_OPTIONS
}

# ---------------------------------------------------------------------------
# TSan

# The C++ test binaries that run threads: several models or one shared model
# in threads (test_concurrency), and the runtime's own worker threads that
# generate random weights (test_random_model) and quantize on load
# (test_model_quantize).
TSAN_TESTS=(test_concurrency test_random_model test_model_quantize)
# The Python tests that run threads into the extension module: threads
# sharing a model, loads in threads calling back into Python, and the server
# (its engine thread and concurrent requests).
TSAN_PYTHON_TESTS=(
  "tests/python/test_api.py::test_threads_share_a_model"
  "tests/python/test_api.py::test_threads_with_their_own_models"
  "tests/python/test_api_extra.py::test_load_in_threads_with_callbacks"
  "tests/python/test_server.py"
)

run_tsan() {
  local build=$TSAN_BUILD_DIR reports t
  reports=$build/sanitizer-reports
  rm -rf "$reports"
  mkdir -p "$reports"
  # libgomp synchronises its thread pool with futexes TSan cannot see, so
  # every OpenMP-parallel kernel would report false races: the CPU backend
  # and oneDNN run on one OpenMP thread.  TSan checks the threads moert and
  # its users start, not the kernels' OpenMP parallelism (ASan runs those).
  export OMP_NUM_THREADS=1 MOERT_CPU_THREADS=1
  export TSAN_OPTIONS="halt_on_error=0:second_deadlock_stack=1:suppressions=$SUPP/tsan.supp:log_path=$reports/tsan:log_exe_name=1"

  phase "tsan: configure and build $build"
  configure "$build" -DMOERT_SANITIZE=OFF -DMOERT_SANITIZE_THREAD=ON -DMOERT_BUILD_BENCH=OFF \
    -DMOERT_BUILD_EXAMPLES=OFF
  # Only what the tests below run: the test binaries, the plugins they load
  # (those whose dependencies were found) and the Python module.
  local targets=("${TSAN_TESTS[@]}") all_targets
  all_targets=$(ninja -C "$build" -t targets all)
  for t in moert_backend_cpu moert_backend_opencl moert_python; do
    if grep -q "^$t:" <<<"$all_targets"; then targets+=("$t"); fi
  done
  cmake --build "$build" -j "$JOBS" --target "${targets[@]}"

  phase "tsan: C++ tests"
  for t in "${TSAN_TESTS[@]}"; do
    "${NO_ASLR[@]}" "$build/bin/$t" --gtest_brief=1 || status=1
  done

  phase "tsan: Python threading tests"
  LD_PRELOAD="$(runtime_lib libtsan.so)" \
    MOERT_PYTHON_DIR="$build/python" PYTHONPATH="$ROOT/python" \
    "${NO_ASLR[@]}" "$PYTHON_EXE" -m pytest -q -p no:cacheprovider "${TSAN_PYTHON_TESTS[@]}" ||
    status=1
  phase ""
  check_reports "$reports" || status=1
  unset OMP_NUM_THREADS MOERT_CPU_THREADS TSAN_OPTIONS
}

case "$MODE" in
  asan) run_asan ;;
  tsan) run_tsan ;;
  all)
    run_asan
    run_tsan
    ;;
esac
exit $status
