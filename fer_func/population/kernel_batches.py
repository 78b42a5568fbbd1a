"""Several CPU kernels to one g++ run, instead of one g++ run per kernel.

Inductor builds every CPU kernel of a program as its own shared library: one g++ process that
loads the 158 MB precompiled header (0.42 s here before any of the kernel's own code), compiles
the kernel, and links against libtorch (0.3 s). A cold lr step has 28 kernels and its evaluation
program eight more, so about 0.7 s of every kernel's ~1.2 s of g++ is the same fixed cost, and on
a 2-core machine that g++ work, not inductor's code generation, was what a cold compile waited for
once code generation got faster (docs/bench.md).

:func:`front` gives early_cpp.py an ``async_compile`` whose ``cpp_pybinding`` goes through
inductor's own ``load_pybinding_async`` (same source file, same key, same command line), but
hands the compile to a batcher instead of a worker. While code generation goes on (on the other
core), the batcher starts a g++ run whenever none is running, on everything that queued up meanwhile
(split into runs of at most ``MAX_BATCH`` kernels), so batches grow when g++ is the bottleneck and
stay single when it is not; when inductor first asks for a kernel (code generation is over), all
that is left goes at once, in at least two runs, one per core.

A batch is one C++ file: the kernels' ``#include`` lines once, then each kernel in a namespace of
its own with the same Python binding inductor would have written, and one module initialiser
(PEP 489 multi-phase) that picks the kernel by the module's name, which inductor sets to
``<key>.kernel``. The library is then hard-linked to every kernel's own library path, so inductor
finds each kernel built, loads it as it always does, and so does every later process (a warm
cache never generates code and never comes here). The kernels' code and flags are unchanged. If
a batch fails to build, each of its kernels is built alone, as inductor would have.
"""
from __future__ import annotations

import hashlib
import os
import re
import shlex
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor

MAX_BATCH = 6  # kernels per g++ run: ~0.45 s each after the run's ~0.7 s fixed cost, so a batch is done in ~3.5 s
built_batches = 0  # batches built by this process (tests read it)
batched_kernels = 0  # kernels built in them

_PARSE_ARG = r"""
static void* (*_torchinductor_pyobject_tensor_data_ptr)(PyObject* obj);
template <typename T> static inline T parse_arg(PyObject* args, size_t n) {
    static_assert(std::is_pointer_v<T>, "arg type must be pointer or long");
    return static_cast<T>(_torchinductor_pyobject_tensor_data_ptr(PyTuple_GET_ITEM(args, n)));
}
template <> inline int64_t parse_arg<int64_t>(PyObject* args, size_t n) {
    auto result = PyLong_AsSsize_t(PyTuple_GET_ITEM(args, n));
    if(result == -1 && PyErr_Occurred()) [[unlikely]] throw std::runtime_error("expected int arg");
    return result;
}
template <> inline uintptr_t parse_arg<uintptr_t>(PyObject* args, size_t n) {
    auto result = PyLong_AsVoidPtr(PyTuple_GET_ITEM(args, n));
    if(result == reinterpret_cast<void*>(-1) && PyErr_Occurred()) [[unlikely]] throw std::runtime_error("expected int arg");
    return reinterpret_cast<uintptr_t>(result);
}
template <> inline float parse_arg<float>(PyObject* args, size_t n) {
    auto result = PyFloat_AsDouble(PyTuple_GET_ITEM(args, n));
    if(result == -1.0 && PyErr_Occurred()) [[unlikely]] throw std::runtime_error("expected float arg");
    return static_cast<float>(result);
}
"""

_BINDING = r"""
static PyObject* fer_kernel_{i}_py(PyObject* self, PyObject* args) {{
    try {{
        if(!PyTuple_CheckExact(args)) [[unlikely]] throw std::runtime_error("tuple args required");
        if(PyTuple_GET_SIZE(args) != {arg_len}) [[unlikely]] throw std::runtime_error("requires {arg_len} args");
        fer_kernel_{i}::kernel({parse_args}); Py_RETURN_NONE;
    }} catch(std::exception const& e) {{
        PyErr_SetString(PyExc_RuntimeError, e.what()); return nullptr;
    }} catch(...) {{
        PyErr_SetString(PyExc_RuntimeError, "unhandled error"); return nullptr;
    }}
}}
static PyMethodDef fer_kernel_{i}_methods[] = {{{{"kernel", fer_kernel_{i}_py, METH_VARARGS, ""}}, {{NULL, NULL, 0, NULL}}}};
"""

_MODULE = r"""
struct FerKernel { const char* key; PyMethodDef* methods; };
static FerKernel fer_kernels[] = { KERNELS };

static int fer_exec(PyObject* module) {
    const char* str_addr = std::getenv("_TORCHINDUCTOR_PYOBJECT_TENSOR_DATA_PTR");
    if(!str_addr) {
        PyErr_SetString(PyExc_RuntimeError, "_TORCHINDUCTOR_PYOBJECT_TENSOR_DATA_PTR must be set");
        return -1;
    }
    char* endptr = nullptr;
    errno = 0;
    uintptr_t addr = std::strtoull(str_addr, &endptr, 10);
    if(errno != 0 || endptr == str_addr || addr == 0) {
        PyErr_SetString(PyExc_RuntimeError, "Failed to parse _TORCHINDUCTOR_PYOBJECT_TENSOR_DATA_PTR");
        return -1;
    }
    _torchinductor_pyobject_tensor_data_ptr = reinterpret_cast<decltype(_torchinductor_pyobject_tensor_data_ptr)>(addr);
    const char* name = PyModule_GetName(module);  // "<key>.kernel": the key says which kernel this is
    if(!name) return -1;
    const char* dot = std::strchr(name, '.');
    size_t len = dot ? static_cast<size_t>(dot - name) : std::strlen(name);
    for(auto& k : fer_kernels)
        if(std::strlen(k.key) == len && std::strncmp(k.key, name, len) == 0)
            return PyModule_AddFunctions(module, k.methods);
    PyErr_Format(PyExc_ImportError, "no kernel %s in this batch", name);
    return -1;
}
static PyModuleDef_Slot fer_slots[] = {{Py_mod_exec, (void*)fer_exec}, {0, NULL}};
static struct PyModuleDef fer_module = {PyModuleDef_HEAD_INIT, "kernel", NULL, 0, NULL, fer_slots, NULL, NULL, NULL};
PyMODINIT_FUNC PyInit_kernel(void) { return PyModuleDef_Init(&fer_module); }
"""


class _Kernel:
    """One kernel waiting for its batch; inductor's ``load_fn`` waits on it as on a worker's future."""

    def __init__(self, argtypes, source, worker_fn, command, target, lock_path):
        self.argtypes, self.source, self.worker_fn = list(argtypes), source, worker_fn
        self.command, self.target = command, target
        self.source_path = os.path.splitext(target)[0] + ".cpp"
        self.key = os.path.basename(target).split(".")[0]  # inductor's key: it names the module
        # The file lock inductor's own worker builds this kernel under: the batch links the library into
        # place under the same lock, so one of the two, never both, puts it there.
        self.lock_path = lock_path
        # the command line without this kernel's own paths: kernels whose flags agree share a batch
        self.flags = command.replace(self.source_path, "<source>").replace(target, "<library>")
        self.submitted, self.done = False, threading.Event()

    def result(self, timeout=None):
        _batcher.demand(self)
        self.done.wait()


class _Batcher:
    def __init__(self):
        self.lock = threading.Lock()
        self.pending: list[_Kernel] = []
        self.unfinished: set[_Kernel] = set()  # queued or building: what a forked child must not wait for
        self.in_flight = 0
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fer_func-kernel-batch")

    def add(self, kernel: _Kernel):
        with self.lock:
            self.pending.append(kernel)
            self.unfinished.add(kernel)
            self._pump(limit=1)

    def demand(self, kernel: _Kernel):
        # Inductor wants a kernel: code generation is over, so nothing more will queue. Both cores.
        with self.lock:
            if not kernel.submitted:
                self._pump(limit=None)

    def _pump(self, limit):
        if not self.pending or (limit is not None and self.in_flight >= limit):
            return
        groups: dict[str, list[_Kernel]] = {}
        for k in self.pending:  # kernels built with other flags (vectorised or not) go to other batches
            groups.setdefault(k.flags, []).append(k)
        self.pending = []
        batches = []
        for ks in groups.values():
            # at least two batches once code generation is over (one per core), and none over MAX_BATCH
            parts = max(2 if limit is None else 1, -(-len(ks) // MAX_BATCH))
            batches += [b for b in (ks[i::parts] for i in range(parts)) if b]
        for batch in batches:
            for k in batch:
                k.submitted = True
            self.in_flight += 1
            self.pool.submit(self._run, batch)

    def _run(self, batch: list[_Kernel]):
        try:
            try:
                built = _build(batch)
            except Exception:  # noqa: BLE001 - a batch is an optimisation: build the kernels as inductor would
                built = False
            if not built:
                for k in batch:  # each kernel alone, inductor's own build
                    k.worker_fn()
        except Exception:  # noqa: BLE001 - inductor's load_fn builds anything still missing, and raises its error
            pass
        finally:
            for k in batch:
                k.done.set()
            with self.lock:
                self.unfinished.difference_update(batch)
                self.in_flight -= 1
                self._pump(limit=1)


_batcher = _Batcher()


def _after_fork_in_child():
    # A forked child has none of the parent's batch threads: whatever they were to build, nobody will. Its
    # waiters go on to inductor's load_fn, which builds any library still missing, one g++ per kernel.
    global _batcher
    for k in _batcher.unfinished:
        k.submitted = True
        k.done.set()
    _batcher = _Batcher()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _build(batch: list[_Kernel]) -> bool:
    """One library for the batch, linked to each kernel's library path; False if it did not build."""
    global built_batches, batched_kernels
    from torch.utils._filelock import FileLock

    if len(batch) == 1:
        return False  # one kernel: inductor's own build is the same g++ run
    includes, bodies, bindings = [], [], []
    for i, k in enumerate(batch):
        lines = k.source.splitlines()
        includes += [ln for ln in lines if ln.lstrip().startswith("#include")]
        body = "\n".join(ln for ln in lines if not ln.lstrip().startswith("#include"))
        body, n = re.subn(r'extern\s+"C"\s+', "", body, count=1)  # C linkage would clash between kernels
        if n != 1:
            return False
        bodies.append(f"namespace fer_kernel_{i} {{\n{body}\n}}\n")
        parse = ", ".join(f"parse_arg<{t.replace('const ', '')}>(args, {j})" for j, t in enumerate(k.argtypes))
        bindings.append(_BINDING.format(i=i, arg_len=len(k.argtypes), parse_args=parse))
    table = ", ".join(f'{{"{k.key}", fer_kernel_{i}_methods}}' for i, k in enumerate(batch))
    code = "\n".join([*dict.fromkeys(includes), *bodies, "#define PY_SSIZE_T_CLEAN", "#include <Python.h>",
                      "#include <cerrno>", "#include <cstdlib>", "#include <cstring>", "#include <stdexcept>",
                      _PARSE_ARG, *bindings, _MODULE.replace("KERNELS", table)])
    first = batch[0]
    source = first.source_path
    if first.command.count(source) != 1 or first.command.count(first.target) != 1:
        return False
    name = hashlib.sha256((code + first.command).encode()).hexdigest()[:32]
    out_dir = os.path.join(os.path.dirname(os.path.dirname(first.target)), "fer_func_batches")
    os.makedirs(out_dir, exist_ok=True)
    batch_source, library = os.path.join(out_dir, f"{name}.cpp"), os.path.join(out_dir, f"{name}.so")
    with open(batch_source, "w") as f:
        f.write(code)
    command = first.command.replace(source, batch_source).replace(first.target, library)
    done = subprocess.run(shlex.split(command), cwd=out_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        return False
    for k in batch:
        with FileLock(k.lock_path, timeout=600):
            if not os.path.exists(k.target):
                staged = f"{k.target}.{os.getpid()}.tmp"
                os.link(library, staged)
                os.replace(staged, k.target)  # whole or absent: another process may be looking for it
    built_batches += 1
    batched_kernels += len(batch)
    return True


class _Front:
    """What early_cpp evaluates a kernel's ``async_compile.cpp_pybinding(...)`` expression against."""

    def cpp_pybinding(self, argtypes, source_code):
        from torch._inductor.codecache import CppPythonBindingsCodeCache

        def capture(worker_fn):
            builders = worker_fn.args[1] if len(worker_fn.args) == 2 else ()
            if len(builders) != 1:  # a kernel with separately optimised code: inductor's way
                from torch._inductor.async_compile import AsyncCompile
                return AsyncCompile().submit(worker_fn)
            builder = builders[0]
            kernel = _Kernel(argtypes, source_code, worker_fn, builder.get_command_line(),
                             builder.get_target_file_path(), lock_path=worker_fn.args[0])
            _batcher.add(kernel)
            return kernel

        return CppPythonBindingsCodeCache.load_pybinding_async(argtypes, source_code, submit_fn=capture)


def front() -> _Front:
    return _Front()
