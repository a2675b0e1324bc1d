#!/usr/bin/env python3
"""Stub CUDA libraries for PyPI's PyTorch wheel on a machine without CUDA.

PyPI's Linux torch wheel is a CUDA build: libtorch_cpu, libtorch_cuda and
torch._C link against libcudart, libcublas, libcudnn, libnccl, ... that come
in multi-GB nvidia-* wheels.  Nothing here runs CUDA, so instead this writes,
into torch/lib (on every torch library's RPATH as $ORIGIN), one small shared
object per CUDA library that torch links to and does not ship: same soname,
same symbol versions, every function torch imports from it defined.  Each
function returns 100 (cudaErrorNoDevice; a non-zero status for the other
libraries' APIs too) and the *ErrorString / *ErrorName ones a message, so
torch.cuda.is_available() is False and torch runs on the CPU.

    python3 scripts/torch-cuda-stubs.py SITE_PACKAGES/torch WORK_DIR

Needs readelf, ldconfig and a C compiler ($CC, else cc).  Prints a line per stub.
"""

import os
import re
import subprocess
import sys

# The CUDA libraries: libcudart, libcublas(Lt), libcudnn, libcufft, libcufile,
# libcupti, libcusolver, libcusparse(Lt), libcuda, libnvrtc, libnvshmem_host,
# libnccl, ...
CUDA_LIBRARY = re.compile(r"^lib(cu|nv|nccl)")
ERROR_TEXT = re.compile(r"(?i)(error(string|name))$")
NO_DEVICE = 100


def readelf(*args):
    return subprocess.run(["readelf", "-W", *args], check=True, capture_output=True,
                          text=True).stdout


def needed(path):
    """The sonames `path` links to (DT_NEEDED)."""
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", readelf("-d", path))


def version_files(path):
    """Version name -> the library it is needed from (.gnu.version_r)."""
    text = readelf("-V", path)
    start = text.find("Version needs")
    out, current = {}, None
    for line in text[start:].splitlines() if start >= 0 else []:
        m = re.search(r"File: (\S+)", line)
        if m:
            current = m.group(1)
            continue
        m = re.search(r"Name: (\S+)", line)
        if m and current:
            out[m.group(1)] = current
    return out


def dynamic_symbols(path):
    """(undefined [(name, version or None, type)], defined {name}) of the
    dynamic symbol table; weak undefined symbols need no definition."""
    undefined, defined = [], set()
    for line in readelf("--dyn-syms", path).splitlines():
        f = line.split()
        if len(f) < 8 or not f[0].endswith(":"):
            continue
        typ, bind, ndx, name = f[3], f[4], f[6], f[7]
        name, _, version = name.partition("@")
        version = version.lstrip("@") or None
        if ndx == "UND":
            if bind == "GLOBAL" and name:
                undefined.append((name, version, typ))
        elif bind in ("GLOBAL", "WEAK"):
            defined.add(name)
    return undefined, defined


def system_libraries():
    """soname -> path of the x86-64 libraries in the loader's cache."""
    out = subprocess.run(["ldconfig", "-p"], check=True, capture_output=True, text=True).stdout
    libs = {}
    for line in out.splitlines():
        m = re.match(r"\s*(\S+) \(([^)]*)\) => (\S+)", line)
        if m and "x86-64" in m.group(2):
            libs.setdefault(m.group(1), m.group(3))
    return libs


def stub_source(symbols):
    """C source defining every (name -> type) of `symbols`."""
    lines = ['static const char message[] = "CUDA is not available (moert stub library)";']
    for i, (name, typ) in enumerate(sorted(symbols.items())):
        if typ in ("OBJECT", "TLS"):
            lines.append(f'char s{i}[256] __asm__("{name}");')
        elif ERROR_TEXT.search(name):
            lines.append(f'const char *s{i}(void) __asm__("{name}");')
            lines.append(f"const char *s{i}(void) {{ return message; }}")
        else:
            lines.append(f'long s{i}(void) __asm__("{name}");')
            lines.append(f"long s{i}(void) {{ return {NO_DEVICE}; }}")
    return "\n".join(lines) + "\n"


def version_script(versions):
    """A linker version script: each named version node with its symbols;
    unversioned symbols stay global."""
    nodes = [f"{v} {{ global: {' '.join(s + ';' for s in sorted(names))} }};"
             for v, names in sorted(versions.items())]
    return "\n".join(nodes) + "\n" if nodes else "{ global: *; };\n"


def main(torch_dir, work):
    lib_dir = os.path.join(torch_dir, "lib")
    elves = [os.path.join(lib_dir, n) for n in sorted(os.listdir(lib_dir))
             if ".so" in n and not CUDA_LIBRARY.match(n)]
    elves += [os.path.join(torch_dir, n) for n in sorted(os.listdir(torch_dir))
              if n.endswith(".so")]
    own = {os.path.basename(p) for p in elves}
    stubs = {}     # soname -> {symbol: type}
    versions = {}  # soname -> {version: {symbol}}
    defined, base, unversioned = set(), set(), []
    for path in elves:
        deps = needed(path)
        targets = [d for d in deps if CUDA_LIBRARY.match(d) and d not in own]
        base.update(d for d in deps if d not in own and not CUDA_LIBRARY.match(d))
        files = version_files(path)
        for d in targets:
            stubs.setdefault(d, {})
            versions.setdefault(d, {})
        undefined, defs = dynamic_symbols(path)
        defined |= defs
        # An unversioned symbol's library is not recorded: it goes into every
        # CUDA library of this file that has no symbol versions.
        plain = [d for d in targets if d not in files.values()]
        for name, version, typ in undefined:
            if version is None:
                unversioned += [(name, typ, d) for d in plain]
            elif files.get(version) in stubs:
                stubs[files[version]][name] = typ
                versions[files[version]].setdefault(version, set()).add(name)
    system = system_libraries()
    for soname in sorted(base):
        if soname in system:
            defined |= dynamic_symbols(system[soname])[1]
    for name, typ, soname in unversioned:
        if name not in defined:
            stubs[soname].setdefault(name, typ)
    os.makedirs(work, exist_ok=True)
    for soname, symbols in sorted(stubs.items()):
        src = os.path.join(work, soname + ".c")
        script = os.path.join(work, soname + ".map")
        with open(src, "w", encoding="utf-8") as f:
            f.write(stub_source(symbols))
        with open(script, "w", encoding="utf-8") as f:
            f.write(version_script(versions[soname]))
        subprocess.run([os.environ.get("CC", "cc"), "-shared", "-fPIC", "-O1",
                        "-o", os.path.join(lib_dir, soname), "-Wl,-soname," + soname,
                        "-Wl,--version-script=" + script, src], check=True)
        print(f"torch-cuda-stubs: {soname} ({len(symbols)} symbols)")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: torch-cuda-stubs.py SITE_PACKAGES/torch WORK_DIR")
    main(sys.argv[1], sys.argv[2])
