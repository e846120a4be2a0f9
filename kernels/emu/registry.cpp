// The emulated kernel library: every kernels/*.cu compiled for the CPU, plus a C ABI
// that launches a kernel by name with cuLaunchKernel-style arguments. Built by
// tests/cuda_emulated.rs with
//   g++ -std=c++17 -O2 -fPIC -shared -DES_EMULATE -I kernels kernels/emu/registry.cpp
#include "emu_runtime.h"

#include "../common.cuh"
#include "../attention.cu"
#include "../crf_filter.cu"
#include "../crf_lattice.cu"
#include "../crf_sort.cu"
#include "../elementwise.cu"
#include "../gelu.cu"
#include "../ig.cu"
#include "../norm.cu"
#include "../patch_embed.cu"
#include "../relevance.cu"
#include "../softmax.cu"
#include "selftest.cu"

namespace {

#define ES_KERNEL(name) emu::entry(#name, name)

const std::vector<emu::KernelEntry>& kernel_table() {
    static const std::vector<emu::KernelEntry> table = {
        ES_KERNEL(add_bias_rows_f32), ES_KERNEL(head_rows_f32),      ES_KERNEL(bias_gelu_f32),
        ES_KERNEL(gelu_bwd_f32),      ES_KERNEL(ig_path_f32),        ES_KERNEL(ig_accumulate_f32),
        ES_KERNEL(ig_finish_f32),     ES_KERNEL(ig_advance_row0),    ES_KERNEL(nt_noise_f32),       ES_KERNEL(nt_designed_f32),
        ES_KERNEL(nt_aggregate_f32),
        ES_KERNEL(layer_norm_f32),    ES_KERNEL(layer_norm_bwd_f32), ES_KERNEL(im2col_f32),
        ES_KERNEL(col2im_f32),        ES_KERNEL(embed_tokens_f32),   ES_KERNEL(softmax_scale_f32),
        ES_KERNEL(softmax_bwd_f32),   ES_KERNEL(attention_fwd_f32),  ES_KERNEL(attention_bwd_dq_f32),
        ES_KERNEL(attention_bwd_dkdv_f32),
        // The relevance map on the device (relevance.cu).
        ES_KERNEL(select_target_i32), ES_KERNEL(reduce_channels_f32), ES_KERNEL(blur_axis_f32),
        ES_KERNEL(min_max_f32),       ES_KERNEL(min_max_scale_f32),
        // DenseCRF (crf_lattice.cu, crf_sort.cu, crf_filter.cu).
        ES_KERNEL(crf_features_f32),  ES_KERNEL(lattice_locate_f32), ES_KERNEL(lattice_reset),
        ES_KERNEL(lattice_insert),    ES_KERNEL(lattice_verify),    ES_KERNEL(lattice_owner_flags), ES_KERNEL(lattice_number),
        ES_KERNEL(lattice_entry_vertex), ES_KERNEL(lattice_starts),  ES_KERNEL(lattice_neighbors),
        ES_KERNEL(scan_exclusive_u32), ES_KERNEL(radix_histogram_u32), ES_KERNEL(radix_scatter_u32),
        ES_KERNEL(lattice_splat_f32), ES_KERNEL(lattice_blur_f32),   ES_KERNEL(lattice_slice_f32),
        ES_KERNEL(crf_fill_f32),      ES_KERNEL(crf_norm_f32),       ES_KERNEL(crf_softmax_init_f32),
        ES_KERNEL(crf_update_f32),    ES_KERNEL(crf_labels),        ES_KERNEL(crf_foreground_u8),
        // Not project kernels: the emulator's own checks (names start with selftest_).
        ES_KERNEL(selftest_early_return), ES_KERNEL(selftest_missing_barrier),
        ES_KERNEL(selftest_atomic_race),  ES_KERNEL(selftest_atomic_claim),
    };
    return table;
}

std::mutex g_launch_lock;  // the emulator's globals serve one launch at a time

}  // namespace

extern "C" {

// Number of kernels in the table, and the name of kernel `i` (for coverage checks).
int es_emu_kernel_count() { return int(kernel_table().size()); }
const char* es_emu_kernel_name(int i) {
    return i >= 0 && i < es_emu_kernel_count() ? kernel_table()[size_t(i)].name : nullptr;
}

// Launches `name` on grid × block with `n_args` arguments: args[i] points at the
// value of argument i, whose size must be arg_sizes[i]. schedule: 0 forward,
// 1 reverse, 2 random (seeded). Returns 0, or -1 with es_emu_last_error() set
// (for the calling thread).
int es_emu_launch(const char* name, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                  unsigned shared_bytes, void** args, const size_t* arg_sizes, size_t n_args, int schedule,
                  unsigned long long seed) {
    std::lock_guard<std::mutex> lock(g_launch_lock);
    emu::g_last_error.clear();
    const emu::KernelEntry* k = nullptr;
    for (const auto& e : kernel_table())
        if (std::strcmp(e.name, name) == 0) k = &e;
    if (!k) {
        emu::g_last_error = std::string("no kernel named ") + name;
        return -1;
    }
    if (n_args != k->n_args) {
        emu::g_last_error = std::string(name) + " takes " + std::to_string(k->n_args) + " arguments, got " +
                            std::to_string(n_args);
        return -1;
    }
    for (size_t i = 0; i < n_args; ++i)
        if (arg_sizes[i] != k->arg_sizes[i]) {
            emu::g_last_error = std::string(name) + ": argument " + std::to_string(i) + " has " +
                                std::to_string(arg_sizes[i]) + " bytes, the kernel expects " +
                                std::to_string(k->arg_sizes[i]);
            return -1;
        }
    if (shared_bytes != 0) {
        emu::g_last_error = "dynamic shared memory is not emulated";
        return -1;
    }
    if (schedule < 0 || schedule > 2) {
        emu::g_last_error = "schedule must be 0 (forward), 1 (reverse) or 2 (random)";
        return -1;
    }
    std::string err = emu::run_grid(dim3(gx, gy, gz), dim3(bx, by, bz), emu::Schedule(schedule), seed,
                                    [&] { k->call(args); });
    if (!err.empty()) {
        emu::g_last_error = std::string(name) + ": " + err;
        return -1;
    }
    return 0;
}

const char* es_emu_last_error() { return emu::g_last_error.c_str(); }

}  // extern "C"
