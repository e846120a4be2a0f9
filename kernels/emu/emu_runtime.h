// The emulator's scheduler: fibers for the threads of a block, barriers, warp
// exchange, deadlock and stack-overflow reports, and `emu::launch`. Included once,
// by the translation unit that also includes the kernels (registry.cpp).
#pragma once

#include <signal.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <cstdlib>
#include <functional>
#include <mutex>
#include <random>
#include <stdexcept>

#include "cuda_emu.h"

extern "C" char __start_es_shared[];
extern "C" char __stop_es_shared[];

// Fibers switch with a 14-instruction x86-64 routine (~10 ns, no syscall) where
// available; glibc's swapcontext (a sigprocmask syscall per switch, ~300–400 ns) is
// the portable fallback (-DES_EMU_UCONTEXT forces it).
#if defined(__x86_64__) && !defined(ES_EMU_UCONTEXT)
#define ES_EMU_ASM_SWITCH 1
// es_emu_switch(&from_sp, to_sp): saves the callee-saved registers on the current
// stack, stores its pointer in *from_sp, loads to_sp and restores the other side's.
asm(R"(
    .text
    .globl es_emu_switch
    .hidden es_emu_switch
    .type es_emu_switch, @function
es_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size es_emu_switch, .-es_emu_switch
)");
extern "C" void es_emu_switch(void** from_sp, void* to_sp);
#endif

namespace emu {

enum class Schedule : int { Forward = 0, Reverse = 1, Random = 2 };

constexpr size_t kStackBytes = 64 * 1024;

struct Fiber {
#ifdef ES_EMU_ASM_SWITCH
    void* sp = nullptr;
#else
    ucontext_t ctx;
#endif
    char* stack = nullptr;  // usable part, above the guard page
    uint3 tid{};
    bool done = false;
    const uint64_t* wait_gen = nullptr;  // blocked until *wait_gen != wait_seen
    uint64_t wait_seen = 0;
    const char* waiting_at = nullptr;
};

struct Warp {
    uint64_t gen = 0;
    unsigned arrived = 0;
    unsigned full = 0;  // lanes that exist
    unsigned long long slot[32];
};

struct BlockRun {
    std::vector<Fiber> fibers;
    std::vector<int> order;
    std::vector<Warp> warps;
#ifdef ES_EMU_ASM_SWITCH
    void* scheduler_sp = nullptr;
#else
    ucontext_t scheduler;
#endif
    int current = -1;
    int done = 0;
    uint64_t bar_gen = 0;
    int bar_arrived = 0;
    std::string error;
    std::function<void()> body;
};

inline BlockRun* g_run = nullptr;
inline std::vector<char*> g_stacks;  // mmapped regions (guard page + stack), reused
inline char* g_guard_lo = nullptr;   // for the SIGSEGV report: any guard page of ours
// Per thread: launches are serialised by a lock, but the caller reads the error
// after the lock is released, while another thread's launch may clear a shared one.
inline thread_local std::string g_last_error;

inline Fiber& me() { return g_run->fibers[g_run->current]; }

// From the running fiber to the scheduler, and back.
inline void switch_out(Fiber& f) {
    asm volatile("" ::: "memory");
#ifdef ES_EMU_ASM_SWITCH
    es_emu_switch(&f.sp, g_run->scheduler_sp);
#else
    swapcontext(&f.ctx, &g_run->scheduler);
#endif
    asm volatile("" ::: "memory");
}

// From the scheduler into fiber f until it yields or ends.
inline void switch_in(Fiber& f) {
#ifdef ES_EMU_ASM_SWITCH
    es_emu_switch(&g_run->scheduler_sp, f.sp);
#else
    swapcontext(&g_run->scheduler, &f.ctx);
#endif
}

inline void yield_to_scheduler() { switch_out(me()); }

// Called before every atomic: lets the other threads of the block run first.
inline void atomic_yield() {
    if (g_run) yield_to_scheduler();
}

[[noreturn]] inline void fail(const std::string& what) {
    Fiber& f = me();
    char buf[160];
    std::snprintf(buf, sizeof buf, " (thread (%u,%u,%u) of block (%u,%u,%u))", f.tid.x, f.tid.y,
                  f.tid.z, blockIdx.x, blockIdx.y, blockIdx.z);
    g_run->error = what + buf;
    f.done = true;
    switch_out(f);
    std::abort();  // never resumed
}

inline void sync_block() {
    BlockRun& b = *g_run;
    Fiber& f = me();
    uint64_t gen = b.bar_gen;
    if (++b.bar_arrived == int(b.fibers.size())) {
        b.bar_arrived = 0;
        ++b.bar_gen;
    } else {
        f.wait_gen = &b.bar_gen;
        f.wait_seen = gen;
        f.waiting_at = "__syncthreads";
    }
    // Everyone yields, the last arriver too, so the schedule decides who runs first.
    yield_to_scheduler();
}

inline Warp& my_warp(int* lane) {
    int linear = int(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z));
    *lane = linear & 31;
    return g_run->warps[linear >> 5];
}

inline void sync_warp(unsigned mask) {
    int lane;
    Warp& w = my_warp(&lane);
    if (mask != w.full) fail("partial-warp mask " + std::to_string(mask) + " is not emulated (use the full warp)");
    uint64_t gen = w.gen;
    w.arrived |= 1u << lane;
    if (w.arrived == w.full) {
        w.arrived = 0;
        ++w.gen;
    } else {
        Fiber& f = me();
        f.wait_gen = &w.gen;
        f.wait_seen = gen;
        f.waiting_at = "a warp barrier (__syncwarp / *_sync)";
    }
    yield_to_scheduler();
}

inline unsigned long long warp_exchange(unsigned mask, unsigned long long mine, int src_lane, bool keep_own) {
    int lane;
    Warp& w = my_warp(&lane);
    w.slot[lane] = mine;
    sync_warp(mask);
    unsigned long long got = keep_own ? mine : w.slot[src_lane];
    sync_warp(mask);
    return got;
}

inline void fiber_entry() {
    g_run->body();
    me().done = true;
    g_run->done++;
    switch_out(me());
    std::abort();  // a finished fiber is never resumed
}

inline void on_segv(int sig, siginfo_t* info, void*) {
    char* addr = static_cast<char*>(info->si_addr);
    for (char* region : g_stacks) {
        if (addr >= region && addr < region + 4096) {
            const char msg[] = "cuda emulator: stack overflow in a kernel thread (64 KiB fiber stack)\n";
            (void)!write(2, msg, sizeof msg - 1);
            _exit(70);
        }
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

inline void ensure_stacks(size_t n) {
    static bool handler = false;
    if (!handler) {
        static char alt[64 * 1024];
        stack_t ss{};
        ss.ss_sp = alt;
        ss.ss_size = sizeof alt;
        sigaltstack(&ss, nullptr);
        struct sigaction sa {};
        sa.sa_sigaction = on_segv;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigaction(SIGSEGV, &sa, nullptr);
        handler = true;
    }
    long page = sysconf(_SC_PAGESIZE);
    while (g_stacks.size() < n) {
        size_t bytes = kStackBytes + size_t(page);
        void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) throw std::runtime_error("cuda emulator: cannot map a fiber stack");
        mprotect(p, size_t(page), PROT_NONE);  // guard page below the stack
        g_stacks.push_back(static_cast<char*>(p));
    }
}

// Points fiber i at fiber_entry on its own stack.
__attribute__((noinline)) inline void init_fiber(Fiber& f, size_t i, dim3 block, long page) {
    f.tid = uint3{unsigned(i % block.x), unsigned((i / block.x) % block.y), unsigned(i / (size_t(block.x) * block.y))};
#ifdef ES_EMU_ASM_SWITCH
    // The first switch pops six zero registers and "returns" into fiber_entry with the
    // stack aligned as after a call (rsp ≡ 8 mod 16 at entry).
    auto top = reinterpret_cast<uintptr_t>(g_stacks[i] + page + kStackBytes) & ~uintptr_t(15);
    auto* slot = reinterpret_cast<void**>(top);
    slot[-1] = nullptr;  // fiber_entry's return address: it never returns
    slot[-2] = reinterpret_cast<void*>(&fiber_entry);
    for (int r = 3; r <= 8; ++r) slot[-r] = nullptr;
    f.sp = &slot[-8];
#else
    // getcontext "returns twice"; kept out of run_grid so its locals stay unsuspected.
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = g_stacks[i] + page;
    f.ctx.uc_stack.ss_size = kStackBytes;
    f.ctx.uc_link = nullptr;
    makecontext(&f.ctx, fiber_entry, 0);
#endif
}

// Runs `body` as the threads of every block of `grid`. Returns "" or the error.
inline std::string run_grid(dim3 grid, dim3 block, Schedule schedule, uint64_t seed,
                            const std::function<void()>& body) {
    size_t nthreads = size_t(block.x) * block.y * block.z;
    if (nthreads == 0 || nthreads > 1024) return "block of " + std::to_string(nthreads) + " threads (1..1024 allowed)";
    if (nthreads % 32 != 0) return "block of " + std::to_string(nthreads) + " threads: the emulator needs a multiple of 32";
    if (grid.x == 0 || grid.y == 0 || grid.z == 0) return "empty grid";
    if (grid.y > 65535 || grid.z > 65535) return "grid.y/grid.z above 65535";
    ensure_stacks(nthreads);
    long page = sysconf(_SC_PAGESIZE);
    gridDim = grid;
    blockDim = block;
    std::mt19937_64 rng(seed);
    BlockRun run;
    run.body = body;
    g_run = &run;
    for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
            for (unsigned bx = 0; bx < grid.x; ++bx) {
                blockIdx = uint3{bx, by, bz};
                // Uninitialised shared memory: all-ones bytes read as NaN in f32/f64.
                std::memset(__start_es_shared, 0xFF, size_t(__stop_es_shared - __start_es_shared));
                run.fibers.assign(nthreads, Fiber{});
                run.warps.assign(nthreads / 32, Warp{});
                for (auto& w : run.warps) w.full = 0xffffffffu;
                run.done = 0;
                run.bar_gen = 0;
                run.bar_arrived = 0;
                run.order.resize(nthreads);
                for (size_t i = 0; i < nthreads; ++i) run.order[i] = int(i);
                if (schedule == Schedule::Reverse) std::reverse(run.order.begin(), run.order.end());
                if (schedule == Schedule::Random) std::shuffle(run.order.begin(), run.order.end(), rng);
                for (size_t i = 0; i < nthreads; ++i) init_fiber(run.fibers[i], i, block, page);
                while (run.done < int(nthreads)) {
                    bool progressed = false;
                    for (int idx : run.order) {
                        Fiber& f = run.fibers[idx];
                        if (f.done) continue;
                        if (f.wait_gen && *f.wait_gen == f.wait_seen) continue;
                        f.wait_gen = nullptr;
                        f.waiting_at = nullptr;
                        run.current = idx;
                        threadIdx = f.tid;
                        switch_in(f);
                        progressed = true;
                        if (!run.error.empty()) {
                            g_run = nullptr;
                            return run.error;
                        }
                    }
                    if (!progressed) {
                        int waiting = 0;
                        const char* where = "";
                        for (auto& f : run.fibers)
                            if (!f.done) {
                                ++waiting;
                                where = f.waiting_at;
                            }
                        char buf[256];
                        std::snprintf(buf, sizeof buf,
                                      "deadlock in block (%u,%u,%u): %d of %zu threads wait at %s, the "
                                      "others have exited (divergent barrier or early return)",
                                      bx, by, bz, waiting, nthreads, where);
                        g_run = nullptr;
                        return buf;
                    }
                }
            }
    g_run = nullptr;
    return "";
}

template <typename... A, size_t... I>
inline void call_with(void (*k)(A...), void** args, std::index_sequence<I...>) {
    k(*static_cast<std::remove_reference_t<A>*>(args[I])...);
}

// One entry of the kernel table: the kernel's name and a launcher taking the
// arguments as cuLaunchKernel does (an array of pointers to each argument).
struct KernelEntry {
    const char* name;
    size_t n_args;
    std::vector<size_t> arg_sizes;
    std::function<void(void**)> call;
};

template <typename... A>
inline KernelEntry entry(const char* name, void (*k)(A...)) {
    return KernelEntry{name, sizeof...(A), {sizeof(A)...},
                       [k](void** args) { call_with(k, args, std::index_sequence_for<A...>{}); }};
}

// `launch(kernel, grid, block, shmem, args...)`: the C++ spelling of kernel<<<...>>>.
template <typename... A, typename... P>
inline std::string launch(void (*k)(A...), dim3 grid, dim3 block, size_t shmem, P... args) {
    if (shmem != 0) return "dynamic shared memory is not emulated";
    return run_grid(grid, block, Schedule::Forward, 0, [&] { k(args...); });
}

}  // namespace emu
