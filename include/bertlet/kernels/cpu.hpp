// bertlet — run-time CPU feature detection and kernel-path selection.
//
// One binary carries every path; the best one the CPU (and OS) supports is picked at run time:
//   x86-64:  scalar < avx2 (AVX2+FMA+F16C) < avx512 (F, BW, DQ, VL) ; extras: avx512_vnni, avx512_bf16, avx_vnni,
//            amx_int8 (AMX-TILE + AMX-INT8 with the tile state enabled in XCR0; Linux must also grant the process
//            the tile data, see amx.hpp's amx_usable), amx_bf16 (AMX-TILE + AMX-BF16, same conditions;
//            fp32 linears as six bf16 products, kernels/gemm_f32x6.hpp)
//   aarch64: neon (always present) ; extras: dotprod
// BERTLET_FORCE_ARCH=scalar|avx2|avx512|neon forces a path (tests and benchmarks use it to cover each one);
// BERTLET_AMX=0 keeps the int8 linears off the AMX tiles (avx512_vnni instead; the same bits). Forcing a
// path the CPU lacks is an error (input_error 400) rather than a crash. Nothing here reads /proc or /sys or calls
// affinity APIs (both are unreliable inside AWS Lambda); detection is CPUID + XGETBV on x86 and getauxval on Linux
// aarch64.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "bertlet/error.hpp"

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#define BERTLET_X86 1
#if defined(_MSC_VER)
#include <intrin.h>
#else
#include <cpuid.h>
#endif
#endif
#if defined(__aarch64__)
#define BERTLET_ARM64 1
#if defined(__linux__)
#include <sys/auxv.h>
#endif
#endif

namespace bertlet {

/// Kernel paths, ordered by preference within an architecture.
enum class isa { scalar = 0, avx2 = 1, avx512 = 2, neon = 3 };

inline const char* isa_name(isa a) noexcept {
    switch (a) {
        case isa::scalar: return "scalar";
        case isa::avx2: return "avx2";
        case isa::avx512: return "avx512";
        case isa::neon: return "neon";
    }
    return "?";
}

struct cpu_features {
    bool avx2 = false, fma = false, f16c = false;
    bool avx512f = false, avx512bw = false, avx512dq = false, avx512vl = false;
    bool avx512_vnni = false, avx512_bf16 = false, avx_vnni = false;
    bool amx_int8 = false;  // AMX-TILE + AMX-INT8, XCR0 bits 17 (XTILECFG) and 18 (XTILEDATA) set by the OS
    bool amx_bf16 = false;  // AMX-TILE + AMX-BF16, same XCR0 bits
    bool neon = false, dotprod = false;

    bool has_avx2_path() const noexcept { return avx2 && fma && f16c; }
    bool has_avx512_path() const noexcept { return has_avx2_path() && avx512f && avx512bw && avx512dq && avx512vl; }
    bool supports(isa a) const noexcept {
        switch (a) {
            case isa::scalar: return true;
            case isa::avx2: return has_avx2_path();
            case isa::avx512: return has_avx512_path();
            case isa::neon: return neon;
        }
        return false;
    }
    isa best() const noexcept {
        if (has_avx512_path()) return isa::avx512;
        if (has_avx2_path()) return isa::avx2;
        if (neon) return isa::neon;
        return isa::scalar;
    }
    std::string describe() const {
        std::string s;
        auto add = [&](bool on, const char* n) {
            if (on) s += (s.empty() ? "" : " ") + std::string(n);
        };
        add(avx2, "avx2");
        add(fma, "fma");
        add(f16c, "f16c");
        add(avx512f, "avx512f");
        add(avx512bw, "avx512bw");
        add(avx512dq, "avx512dq");
        add(avx512vl, "avx512vl");
        add(avx512_vnni, "avx512_vnni");
        add(avx512_bf16, "avx512_bf16");
        add(avx_vnni, "avx_vnni");
        add(amx_int8, "amx_int8");
        add(amx_bf16, "amx_bf16");
        add(neon, "neon");
        add(dotprod, "dotprod");
        return s.empty() ? "baseline" : s;
    }
};

namespace detail {

#if defined(BERTLET_X86)
inline void cpuid(unsigned leaf, unsigned sub, unsigned r[4]) {
#if defined(_MSC_VER)
    int v[4];
    __cpuidex(v, static_cast<int>(leaf), static_cast<int>(sub));
    for (int i = 0; i < 4; ++i) r[i] = static_cast<unsigned>(v[i]);
#else
    __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]);
#endif
}
inline std::uint64_t xgetbv0() {
#if defined(_MSC_VER)
    return _xgetbv(0);
#else
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (static_cast<std::uint64_t>(hi) << 32) | lo;
#endif
}
#endif

inline cpu_features detect_cpu() {
    cpu_features f;
#if defined(BERTLET_X86)
    unsigned r[4];
    cpuid(0, 0, r);
    const unsigned max_leaf = r[0];
    if (max_leaf < 1) return f;
    cpuid(1, 0, r);
    const bool osxsave = (r[2] >> 27) & 1;
    const bool avx = (r[2] >> 28) & 1;
    f.fma = (r[2] >> 12) & 1;
    f.f16c = (r[2] >> 29) & 1;
    if (!osxsave || !avx) {
        f.fma = f.f16c = false;
        return f;
    }
    const std::uint64_t xcr0 = xgetbv0();
    const bool ymm_os = (xcr0 & 0x6) == 0x6;             // XMM + YMM state
    const bool zmm_os = (xcr0 & 0xE6) == 0xE6;           // + opmask, ZMM_Hi256, Hi16_ZMM
    if (!ymm_os) {
        f.fma = f.f16c = false;
        return f;
    }
    if (max_leaf >= 7) {
        cpuid(7, 0, r);
        f.avx2 = (r[1] >> 5) & 1;
        if (zmm_os) {
            f.avx512f = (r[1] >> 16) & 1;
            f.avx512dq = (r[1] >> 17) & 1;
            f.avx512bw = (r[1] >> 30) & 1;
            f.avx512vl = (r[1] >> 31) & 1;
            f.avx512_vnni = (r[2] >> 11) & 1;
            // EDX bit 24 AMX-TILE, bit 25 AMX-INT8; the OS enables the tile state in XCR0 (bits 17, 18)
            f.amx_int8 = ((r[3] >> 24) & 1) && ((r[3] >> 25) & 1) && (xcr0 & 0x60000) == 0x60000;
            f.amx_bf16 = ((r[3] >> 24) & 1) && ((r[3] >> 22) & 1) && (xcr0 & 0x60000) == 0x60000;  // EDX 22 AMX-BF16
        }
        cpuid(7, 1, r);
        f.avx_vnni = (r[0] >> 4) & 1;
        if (zmm_os) f.avx512_bf16 = (r[0] >> 5) & 1;
    }
#elif defined(BERTLET_ARM64)
    f.neon = true;
#if defined(__linux__) && defined(AT_HWCAP)
    const unsigned long hw = getauxval(AT_HWCAP);
    f.dotprod = (hw & (1UL << 20)) != 0;  // HWCAP_ASIMDDP
#endif
#endif
    return f;
}

/// Parses BERTLET_FORCE_ARCH (empty or unset: no forcing). Throws input_error on an unknown or unsupported value.
inline isa choose_isa(const cpu_features& f, const char* forced) {
    if (!forced || !*forced) return f.best();
    const std::string_view v(forced);
    isa want;
    if (v == "scalar") want = isa::scalar;
    else if (v == "avx2") want = isa::avx2;
    else if (v == "avx512") want = isa::avx512;
    else if (v == "neon") want = isa::neon;
    else
        throw input_error(errc::bad_argument, "BERTLET_FORCE_ARCH='" + std::string(v) +
                                                  "' is not one of scalar, avx2, avx512, neon");
    if (!f.supports(want))
        throw input_error(errc::bad_argument, "BERTLET_FORCE_ARCH='" + std::string(v) +
                                                  "' is not supported by this CPU (it has: " + f.describe() + ")");
    return want;
}

}  // namespace detail

/// The CPU's features (detected once).
inline const cpu_features& cpu() {
    static const cpu_features f = detail::detect_cpu();
    return f;
}

/// The kernel path in use: the best the CPU supports, unless BERTLET_FORCE_ARCH says otherwise (read once).
inline isa active_isa() {
    static const isa a = detail::choose_isa(cpu(), std::getenv("BERTLET_FORCE_ARCH"));
    return a;
}

}  // namespace bertlet
