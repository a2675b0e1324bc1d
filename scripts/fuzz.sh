#!/usr/bin/env bash
# Runs moert's fuzz targets (fuzz/README.md).
#
#   scripts/fuzz.sh TARGET SECS      one target for SECS seconds
#   scripts/fuzz.sh all SECS         every target, SECS seconds each
#
# TARGET: safetensors, shard_index, config, quantization (libFuzzer, C++) or
# server (atheris, Python).  Configures and builds build-fuzz/ with clang when
# needed (only the fuzz targets: the runtime with ASan + UBSan and coverage),
# regenerates the seed corpora (fuzz/make_corpus.py -> build-fuzz/corpus/),
# then fuzzes with the seeds of build-fuzz/corpus/<target>/ and
# fuzz/seeds/<target>/; inputs that reach new code are kept in
# build-fuzz/corpus-grown/<target>/ for the next run.  Prints each target's
# execution count.  Exits nonzero when a target found something (a crash, a
# sanitizer report, an unexpected exception, a timeout or an out-of-memory);
# the input is kept in build-fuzz/findings/<target>/ and the log in
# build-fuzz/logs/<target>.log.  Reproduce a C++ finding with
# build-fuzz/bin/fuzz_<target> <file>, a Python one with
# python3 fuzz/python/fuzz_server.py <file>.
#
# Environment: FUZZ_BUILD_DIR (default build-fuzz), FUZZ_JOBS (build
# parallelism, default all cores), FUZZ_TIMEOUT (seconds one input may take
# before it counts as a hang: 10 for C++, 30 for Python), FUZZ_ARGS (more
# libFuzzer flags), MOERT_PYTHON_DIR (the built Python module for the server
# target, default build/python: run scripts/build.sh first).
set -euo pipefail
cd "$(dirname "$0")/.."

CPP_TARGETS=(safetensors shard_index config quantization)
ALL_TARGETS=("${CPP_TARGETS[@]}" server)

usage() {
  echo "usage: scripts/fuzz.sh TARGET|all SECS   (targets: ${ALL_TARGETS[*]})" >&2
  exit 2
}
[ $# -eq 2 ] || usage
target=$1
secs=$2
[[ "$secs" =~ ^[0-9]+$ ]] || usage
if [ "$target" = all ]; then
  targets=("${ALL_TARGETS[@]}")
elif [[ " ${ALL_TARGETS[*]} " == *" $target "* ]]; then
  targets=("$target")
else
  usage
fi

BUILD=${FUZZ_BUILD_DIR:-build-fuzz}
JOBS=${FUZZ_JOBS:-$(nproc)}
PYTHON=${PYTHON:-python3}

needs_cpp=0
for t in "${targets[@]}"; do [ "$t" = server ] || needs_cpp=1; done
if [ $needs_cpp = 1 ]; then
  if [ ! -f "$BUILD/build.ninja" ]; then
    echo "fuzz: configuring $BUILD with clang"
    CC=clang CXX=clang++ cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DMOERT_FUZZ=ON -DMOERT_BUILD_TESTS=OFF -DMOERT_BUILD_EXAMPLES=OFF \
      -DMOERT_BUILD_PYTHON=OFF -DMOERT_BUILD_BENCH=OFF -DMOERT_BACKEND_CPU=OFF \
      -DMOERT_BACKEND_OPENCL=OFF -DMOERT_BACKEND_CUDA=OFF >/dev/null
  fi
  start=$(date +%s)
  cmake --build "$BUILD" --target moert_fuzzers -j "$JOBS"
  echo "fuzz: build took $(($(date +%s) - start)) s"
fi

"$PYTHON" fuzz/make_corpus.py --out "$BUILD/corpus" "${targets[@]}"

# The number of inputs run, from a libFuzzer log.
exec_count() {
  local n
  n=$(grep -oE 'stat::number_of_executed_units: [0-9]+' "$1" | tail -1 | grep -oE '[0-9]+$' || true)
  [ -n "$n" ] || n=$(grep -oE '^#[0-9]+' "$1" | tail -1 | tr -d '#' || true)
  echo "${n:-0}"
}

failed=()
summary=()
for t in "${targets[@]}"; do
  grown="$BUILD/corpus-grown/$t"
  findings="$BUILD/findings/$t"
  log="$BUILD/logs/$t.log"
  mkdir -p "$grown" "$findings" "$BUILD/logs"
  seeds=("$grown" "$BUILD/corpus/$t")
  [ -d "fuzz/seeds/$t" ] && seeds+=("fuzz/seeds/$t")
  # shellcheck disable=SC2206
  extra=(${FUZZ_ARGS:-})
  dict="$BUILD/corpus/$t.dict"
  flags=(-max_total_time="$secs" -print_final_stats=1 -artifact_prefix="$findings/"
         -rss_limit_mb=2048 -dict="$dict" "${extra[@]}")
  export MOERT_FUZZ_DICT="$dict"
  echo "fuzz: $t for $secs s (findings in $findings/, log in $log)"
  set +e
  if [ "$t" = server ]; then
    PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}" \
      MOERT_PYTHON_DIR="${MOERT_PYTHON_DIR:-$PWD/build/python}" \
      "$PYTHON" fuzz/python/fuzz_server.py -timeout="${FUZZ_TIMEOUT:-30}" "${flags[@]}" \
      "${seeds[@]}" >"$log" 2>&1
  else
    UBSAN_OPTIONS=print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS} \
      "$BUILD/bin/fuzz_$t" -timeout="${FUZZ_TIMEOUT:-10}" "${flags[@]}" "${seeds[@]}" \
      >"$log" 2>&1
  fi
  rc=$?
  set -e
  n=$(exec_count "$log")
  if [ $rc = 0 ]; then
    line="fuzz: $t: $n executions in $secs s, no findings"
  else
    failed+=("$t")
    line="fuzz: $t: FINDING after $n executions (exit $rc): $(ls -t "$findings" | head -1)"
    grep -E 'FINDING|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error|Uncaught Python' \
      "$log" | head -5 || true
  fi
  echo "$line"
  summary+=("$line")
done

if [ ${#targets[@]} -gt 1 ]; then
  printf '%s\n' "${summary[@]}"
fi
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: findings in: ${failed[*]} (inputs in $BUILD/findings/, logs in $BUILD/logs/)" >&2
  exit 1
fi
