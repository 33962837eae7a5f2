// bertlet — Intel AMX primitives shared by the tile kernels (gemm_s8.hpp: int8 linears; gemm_f32x6.hpp: fp32 and
// bf16 linears): the process permission, the tile configuration and the tile instructions as inline asm.
//
// Own asm forms instead of GCC 12's <amxtileintrin.h>: its _tile_loadconfig declares only 8 bytes of the 64-byte
// configuration as read (the stores of the tile shapes were dropped as dead: tilezero then raised SIGILL), and its
// tile loads do not declare their memory read at all (the compiler may move them above the stores that fill the
// operands). Every form here is volatile with a "memory" clobber where it touches memory; AT&T | Intel syntax as in
// the header. Inline asm needs no target attribute; the callers' functions carry theirs.
#pragma once

#include <cstdint>
#include <cstdlib>

#include "bertlet/kernels/cpu.hpp"

#if defined(BERTLET_X86) && defined(__linux__)
#include <sys/syscall.h>  // arch_prctl(ARCH_REQ_XCOMP_PERM): the AMX tile data permission
#include <unistd.h>
#endif

namespace bertlet::detail {

/// Whether this process may use the AMX tiles: BERTLET_AMX=0 turns them off (A/B runs against the AVX-512 paths);
/// on Linux the kernel must grant the tile data state first (arch_prctl ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA =
/// 18; without it the first tile instruction raises SIGILL). Asked once per process; a refusal (a kernel before
/// 5.16, a seccomp filter) leaves the AVX-512 paths in use. Other systems: off.
inline bool amx_usable() noexcept {
    static const bool ok = [] {
        const char* e = std::getenv("BERTLET_AMX");
        if (e && e[0] == '0' && e[1] == 0) return false;
#if defined(__linux__) && defined(BERTLET_X86) && defined(SYS_arch_prctl)
        constexpr long arch_req_xcomp_perm = 0x1023, xfeature_xtiledata = 18;
        return syscall(SYS_arch_prctl, arch_req_xcomp_perm, xfeature_xtiledata) == 0;
#else
        return false;
#endif
    }();
    return ok;
}

#if defined(BERTLET_X86) && (defined(__GNUC__) || defined(__clang__))
/// ldtilecfg's 64-byte operand (palette 1).
struct alignas(64) amx_tile_config {
    std::uint8_t palette = 1, start_row = 0;
    std::uint8_t reserved[14] = {};
    std::uint16_t colsb[16] = {};
    std::uint8_t rows[16] = {};
};

/// Configures tiles 0-7 as 16 rows x 64 bytes (what every bertlet tile kernel uses). Per calling thread, before its
/// first tile instruction; amx_release() after the last (the OS then saves no tile state for the thread).
inline void amx_configure() {
    amx_tile_config c;
    for (int t = 0; t < 8; ++t) {
        c.colsb[t] = 64;
        c.rows[t] = 16;
    }
    __asm__ volatile("ldtilecfg\t%0" ::"m"(c) : "memory");
}
inline void amx_release() { __asm__ volatile("tilerelease" ::: "memory"); }

#define BERTLET_AMX_LOAD(t, base, stride)                                                             \
    __asm__ volatile("{tileloadd\t(%0,%1,1), %%tmm" #t "|tileloadd\t%%tmm" #t ", [%0+%1*1]}" ::"r"( \
                         static_cast<const void*>(base)),                                             \
                     "r"(static_cast<long>(stride))                                                   \
                     : "memory")
#define BERTLET_AMX_STORE(t, base, stride)                                                             \
    __asm__ volatile("{tilestored\t%%tmm" #t ", (%0,%1,1)|tilestored\t[%0+%1*1], %%tmm" #t "}" ::"r"( \
                         static_cast<void*>(base)),                                                    \
                     "r"(static_cast<long>(stride))                                                    \
                     : "memory")
#define BERTLET_AMX_ZERO(t) __asm__ volatile("tilezero\t%%tmm" #t ::)
// C (tile c) += A (tile a) x B (tile b): u8 x s8 -> s32 (tdpbusd), bf16 x bf16 -> fp32 (tdpbf16ps)
#define BERTLET_AMX_DPBUSD(c, a, b) \
    __asm__ volatile("{tdpbusd\t%%tmm" #b ", %%tmm" #a ", %%tmm" #c "|tdpbusd\t%%tmm" #c ", %%tmm" #a ", %%tmm" #b "}" ::)
#define BERTLET_AMX_DPBF16PS(c, a, b)                                                                          \
    __asm__ volatile("{tdpbf16ps\t%%tmm" #b ", %%tmm" #a ", %%tmm" #c "|tdpbf16ps\t%%tmm" #c ", %%tmm" #a \
                     ", %%tmm" #b "}" ::)
#endif

}  // namespace bertlet::detail
