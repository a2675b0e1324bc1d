// The x86 intrinsics for the GEMM engine's AVX-512 code.  gcc 12 reports
// -Wuninitialized inside many AVX-512 intrinsics once they are inlined (the
// headers' "undefined register" idiom, `__m512 __Y = __Y;`, gcc bug 105593);
// the warning is silenced for the intrinsic headers only.
#pragma once

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
