#!/usr/bin/env python3
"""Compile every kernels/*.cu with NVRTC (no GPU, no nvcc); check registers, spills and PTX ISA.

Each file is compiled as the Rust side compiles it at run time (src/backend/cuda/modules.rs):
kernels/common.cuh prepended to the .cu, NVRTC to PTX for a virtual architecture, then
`ptxas -v` for the matching real one reports registers, stack and spills per kernel.

NVRTC comes from NVIDIA's PyPI wheels (loaded with ctypes), ptxas and the headers
(cuda_fp16.h, cuda_bf16.h) from the matching nvcc / runtime wheels. Both wheel layouts
are understood: CUDA 12 (`nvidia/cuda_nvrtc/lib`, `nvidia/cuda_nvcc/bin`, ...) and
CUDA 13 (everything under `nvidia/cu13/`).

Fails (exit 1) on a compile error, on a kernel that spills registers to local memory,
or on PTX whose ISA version is newer than the oldest driver we support can JIT
(`--max-ptx-isa`, default 9.0: the R580 driver is CUDA 13.0's, which reads PTX ISA up
to 9.0; CUDA 12.8's NVRTC writes 8.7). See docs/cuda_emulation.md.

    python3 tools/compile_kernels.py [--arch 80 --arch 90] [--ptx-dir DIR] [--max-ptx-isa 9.0]
"""

import argparse
import ctypes
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
KERNELS = ROOT / "kernels"
# Must match NVRTC_OPTIONS in src/backend/cuda/modules.rs: the flags that change numbers.
NVRTC_OPTIONS = ["--std=c++17", "--fmad=true", "--prec-div=true", "--prec-sqrt=true", "--ftz=false"]


def wheel_dir(module: str) -> pathlib.Path | None:
    try:
        mod = __import__(module, fromlist=["__file__"])
    except ImportError:
        return None
    paths = list(getattr(mod, "__path__", []))
    return pathlib.Path(paths[0] if paths else pathlib.Path(mod.__file__).parent)


def toolkit_dirs() -> tuple[pathlib.Path, pathlib.Path, pathlib.Path]:
    """(directory of libnvrtc, include directory, ptxas) from the installed wheels."""
    cu13 = wheel_dir("nvidia.cu13")
    if cu13 is not None:  # CUDA 13 wheels share one prefix
        return cu13 / "lib", cu13 / "include", cu13 / "bin" / "ptxas"
    nvrtc, runtime, nvcc = (wheel_dir(m) for m in ("nvidia.cuda_nvrtc", "nvidia.cuda_runtime", "nvidia.cuda_nvcc"))
    if None in (nvrtc, runtime, nvcc):
        sys.exit("missing NVIDIA wheels: run .ci/cuda_kernels.sh (pip-installs them)")
    return nvrtc / "lib", runtime / "include", nvcc / "bin" / "ptxas"


def load_nvrtc(lib_dir: pathlib.Path) -> ctypes.CDLL:
    candidates = sorted(lib_dir.glob("libnvrtc.so.*")) + sorted(lib_dir.glob("libnvrtc.so"))
    candidates = [c for c in candidates if ".alt." not in c.name]
    if not candidates:
        sys.exit(f"no libnvrtc.so in {lib_dir}")
    # NVRTC dlopens its builtins library by soname; the CUDA 12 wheels find it through
    # libnvrtc's RUNPATH, the CUDA 13 ones do not, so load it first, globally.
    for builtins in sorted(lib_dir.glob("libnvrtc-builtins.so.*")):
        if ".alt." not in builtins.name:
            ctypes.CDLL(str(builtins), mode=ctypes.RTLD_GLOBAL)
    nvrtc = ctypes.CDLL(str(candidates[0]))
    nvrtc.nvrtcGetErrorString.restype = ctypes.c_char_p
    return nvrtc


def check(nvrtc, rc: int, what: str):
    if rc != 0:
        raise RuntimeError(f"{what}: {nvrtc.nvrtcGetErrorString(rc).decode()}")


def nvrtc_version(nvrtc) -> str:
    major, minor = ctypes.c_int(), ctypes.c_int()
    check(nvrtc, nvrtc.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), "nvrtcVersion")
    return f"{major.value}.{minor.value}"


def compile_ptx(nvrtc, source: str, name: str, arch: str, include_dirs) -> str:
    prog = ctypes.c_void_p()
    check(
        nvrtc,
        nvrtc.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0, None, None),
        f"{name}: create program",
    )
    opts = NVRTC_OPTIONS + [f"--gpu-architecture=compute_{arch}"] + [f"-I{d}" for d in include_dirs]
    c_opts = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
    rc = nvrtc.nvrtcCompileProgram(prog, len(opts), c_opts)
    log_size = ctypes.c_size_t()
    nvrtc.nvrtcGetProgramLogSize(prog, ctypes.byref(log_size))
    log = ctypes.create_string_buffer(log_size.value)
    nvrtc.nvrtcGetProgramLog(prog, log)
    text = log.value.decode(errors="replace").strip()
    if rc != 0:
        nvrtc.nvrtcDestroyProgram(ctypes.byref(prog))
        raise RuntimeError(f"{name} (compute_{arch}) failed to compile:\n{text}")
    if text:
        print(f"  {name} (compute_{arch}) warnings:\n{text}")
    size = ctypes.c_size_t()
    check(nvrtc, nvrtc.nvrtcGetPTXSize(prog, ctypes.byref(size)), "ptx size")
    ptx = ctypes.create_string_buffer(size.value)
    check(nvrtc, nvrtc.nvrtcGetPTX(prog, ptx), "get ptx")
    nvrtc.nvrtcDestroyProgram(ctypes.byref(prog))
    return ptx.value.decode()


def ptx_isa(ptx: str) -> tuple[int, int]:
    m = re.search(r"^\.version (\d+)\.(\d+)", ptx, re.M)
    if not m:
        raise RuntimeError("PTX without a .version line")
    return int(m.group(1)), int(m.group(2))


def runtime_source(cu: pathlib.Path) -> str:
    """common.cuh + the .cu, exactly as src/backend/cuda/modules.rs builds it."""
    return (KERNELS / "common.cuh").read_text() + "\n" + cu.read_text()


def ptxas_report(ptxas: pathlib.Path, ptx_file: pathlib.Path, arch: str):
    out = subprocess.run(
        [str(ptxas), f"-arch=sm_{arch}", "-v", "-o", "/dev/null", str(ptx_file)],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(f"ptxas sm_{arch} failed on {ptx_file.name}:\n{out.stderr}")
    rows, kernel, props_of = [], None, None
    for line in out.stderr.splitlines():
        m = re.search(r"Compiling entry function '(\w+)'", line)
        if m:
            kernel = m.group(1)
        m = re.search(r"Function properties for (\w+)", line)
        if m:
            props_of = m.group(1)  # may be a device function (e.g. a trig slow path)
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m and props_of == kernel:
            stack, st, ld = map(int, m.groups())
            rows.append([kernel, 0, stack, st, ld])
        m = re.search(r"Used (\d+) registers", line)
        if m and rows and rows[-1][0] == kernel:
            rows[-1][1] = int(m.group(1))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", action="append", help="compute capability without the dot (default: 80 and 90)")
    ap.add_argument("--ptx-dir", type=pathlib.Path, help="also write the PTX files here")
    ap.add_argument("--max-ptx-isa", default="9.0", help="newest PTX ISA the oldest supported driver JITs")
    args = ap.parse_args()
    archs = args.arch or ["80", "90"]
    max_isa = tuple(int(v) for v in args.max_ptx_isa.split("."))
    lib_dir, include_dir, ptxas = toolkit_dirs()
    nvrtc = load_nvrtc(lib_dir)
    if not ptxas.exists():
        sys.exit(f"no ptxas at {ptxas}")
    print(f"NVRTC {nvrtc_version(nvrtc)}, options {' '.join(NVRTC_OPTIONS)}")
    out_dir = args.ptx_dir or pathlib.Path("/tmp") / "explainseg_ptx"
    out_dir.mkdir(parents=True, exist_ok=True)
    failures, isas = 0, set()
    print(f"{'kernel':28} {'arch':6} {'regs':>5} {'stack':>6} {'spill st':>9} {'spill ld':>9}")
    for cu in sorted(KERNELS.glob("*.cu")):
        for arch in archs:
            try:
                ptx = compile_ptx(nvrtc, runtime_source(cu), cu.name, arch, [include_dir])
                isa = ptx_isa(ptx)
                isas.add(isa)
                if isa > max_isa:
                    raise RuntimeError(f"{cu.name} (compute_{arch}): PTX ISA {isa[0]}.{isa[1]} > {args.max_ptx_isa}")
                ptx_file = out_dir / f"{cu.stem}.sm_{arch}.ptx"
                ptx_file.write_text(ptx)
                for kernel, regs, stack, st, ld in ptxas_report(ptxas, ptx_file, arch):
                    print(f"{kernel:28} sm_{arch:3} {regs:5} {stack:6} {st:9} {ld:9}")
                    if st or ld:
                        raise RuntimeError(f"{kernel} (sm_{arch}) spills {st} B stores / {ld} B loads")
            except RuntimeError as e:
                print(f"ERROR {e}", file=sys.stderr)
                failures += 1
    if failures:
        print(f"{failures} failure(s)", file=sys.stderr)
        return 1
    isa_list = ", ".join(f"{a}.{b}" for a, b in sorted(isas))
    print(f"all kernels compiled: PTX ISA {isa_list} (<= {args.max_ptx_isa}), no spills")
    return 0


if __name__ == "__main__":
    sys.exit(main())
