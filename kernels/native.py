"""Compiled kernels a process can run without importing Numba.

Importing Numba and setting up its type registries costs a new process about 0.3 s before the
first cached function runs. A kernel that a latency-sensitive process needs at its start (the
inference chain) is therefore also stored as plain machine code: a Numba `cfunc` (C calling
convention) compiled once, written as an object file, and loaded later with llvmlite alone
(0.03 s), then called through ctypes (which releases the GIL for the call).

`save(cfunc, path, key)` writes the object file of a compiled cfunc (needs Numba);
`load(path, key)` returns the address of its C entry point, or None when there is no file for
this key, it is damaged, or something it calls cannot be found in this process (needs llvmlite
only).

The code must not depend on Numba's runtime library, which is not loaded then: it allocates
nothing (its buffers come from the caller), and views arrays through `kernels.views`. What is
left of Numba's runtime in the code is the path that reports an exception, which such a kernel
never takes (it checks its arguments and returns a status instead); `save` replaces those
helpers with stubs inside the object (they return nothing), refuses any other external function
than LLVM intrinsics and the C math library, and records the externals so that `load` can check
them first (an unresolved symbol would abort the process inside LLVM).
"""
import hashlib
import json
import os
import re
import tempfile

# Numba runtime functions only the exception-reporting path (and the release of arrays that own
# memory, which a kernel here never holds) calls: stubbed in the saved object
_STUBBED = {"numba_gil_ensure", "numba_gil_release", "numba_unpickle", "numba_runtime_build_excinfo_struct",
            "numba_do_raise", "numba_fatal_error", "NRT_Free", "NRT_MemInfo_call_dtor", "PyUnicode_FromString",
            "PyErr_WriteUnraisable", "Py_DecRef", "PyErr_Clear", "PyBytes_FromStringAndSize", "PyErr_SetString",
            "PyErr_SetObject", "PyErr_SetNone", "PyErr_Occurred", "PyErr_Fetch", "PyErr_Restore"}
# (and the exception classes it names, PyExc_*: zero globals in the saved object)
# functions of the C library the code may call (LLVM lowers some math intrinsics to them; syscall:
# the futex of kernels.atomics)
_LIBC = {"expf", "exp", "logf", "log", "log1pf", "log1p", "expm1f", "expm1", "tanhf", "tanh", "sinf", "sin", "cosf",
         "cos", "powf", "pow", "sqrtf", "sqrt", "fmodf", "fmod", "memset", "memcpy", "memmove", "exp2f", "exp2",
         "log2f", "log2", "atan2f", "atan2", "floorf", "floor", "ceilf", "ceil", "roundf", "round", "truncf", "trunc",
         "syscall"}
_DECLARE = re.compile(r"^declare (?P<attrs>[^@]*?)(?P<ret>void|i1|i8|i16|i32|i64|ptr|float|double) "
                      r"@(?P<name>[\w.$\"]+)\((?P<params>[^)]*)\)(?P<tail>.*)$", re.M)
_EXTERNAL_GLOBAL = re.compile(r"^@(?P<name>[\w.$]+) = external global (?P<type>[^,\s]+)(?P<tail>,.*)?$", re.M)
_ZERO = {"void": None, "ptr": "null", "float": "0.0", "double": "0.0"}
_FORMAT = 1


def _stub(match):
    ret = match.group("ret")
    params = [p.strip().split(" ")[0] for p in match.group("params").split(",") if p.strip()]
    zero = _ZERO.get(ret, "0")
    body = "ret void" if zero is None else f"ret {ret} {zero}"
    return f"define internal {ret} @{match.group('name')}({', '.join(params)}) {{\n  {body}\n}}"


def object_code(cfunc):
    """(object file bytes, externals) of a compiled Numba cfunc, with the exception path's
    runtime helpers stubbed (see the module docstring). ValueError if the code calls or reads
    anything else outside itself (checked on the parsed module, before and after the stubs)."""
    import llvmlite.binding as llvm
    library = cfunc._library
    text = library.get_llvm_str()
    outside = _outside(llvm.parse_assembly(text))
    refused = sorted(name for name in outside
                     if name not in _STUBBED and name not in _LIBC and not name.startswith("PyExc_"))
    if refused:
        raise ValueError(f"native: the code calls or reads {', '.join(refused)}, which a process without Numba "
                         "does not have")
    text = _DECLARE.sub(lambda m: _stub(m) if m.group("name") in _STUBBED else m.group(0), text)
    text = _EXTERNAL_GLOBAL.sub(lambda m: f"@{m.group('name')} = internal global {m.group('type')} zeroinitializer",
                                text)
    module = llvm.parse_assembly(text)
    module.verify()
    externals = _outside(module)
    if not externals <= _LIBC:  # a declaration the rewrite did not recognise
        raise ValueError(f"native: could not stub {', '.join(sorted(externals - _LIBC))}")
    return library.codegen._tm.emit_object(module), sorted(externals)


def _outside(module):
    """The names a parsed module declares without defining (functions and globals), LLVM's own
    intrinsics aside."""
    names = {f.name for f in module.functions if f.is_declaration and not f.name.startswith("llvm.")}
    return names | {g.name for g in module.global_variables if g.is_declaration}


def save(cfunc, path, key):
    """Write the object code of `cfunc` to `path` (and its description to path + '.json'),
    atomically: a reader sees the old files, no files, or both new ones."""
    code, externals = object_code(cfunc)
    meta = dict(format=_FORMAT, key=key, symbol=cfunc.native_name, externals=externals,
                sha256=hashlib.sha256(code).hexdigest())
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    for data, target in ((code, path), (json.dumps(meta).encode(), path + ".json")):
        fd, temp = tempfile.mkstemp(dir=folder, prefix=".native-")
        try:
            if hasattr(os, "fchmod"):  # readable by all (a cache one user fills for others), written by the owner
                os.fchmod(fd, 0o644)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(temp, target)
        except BaseException:
            if os.path.exists(temp):
                os.unlink(temp)
            raise


_engines = []  # the loaded code lives as long as its execution engine: for the process


def load(path, key, link=True):
    """The address of the entry point saved at `path` for `key`, loaded into this process; None
    when it is missing, for another key, damaged, or calls a function this process lacks.
    link=False: only whether the file is there and whole (True or None), nothing loaded."""
    try:
        with open(path + ".json", "rb") as f:
            meta = json.loads(f.read())
        if meta.get("format") != _FORMAT or meta.get("key") != key:
            return None
        with open(path, "rb") as f:
            code = f.read()
    except (OSError, ValueError):
        return None
    if hashlib.sha256(code).hexdigest() != meta.get("sha256") or not isinstance(meta.get("symbol"), str):
        return None
    if not link:
        return True
    import llvmlite.binding as llvm
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    if not all(_resolve(llvm, name) for name in meta.get("externals", ())):
        return None
    target = llvm.Target.from_default_triple().create_target_machine()
    engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), target)
    engine.add_object_file(llvm.ObjectFileRef.from_data(code))
    engine.finalize_object()
    address = engine.get_function_address(meta["symbol"])
    if not address:
        return None
    _engines.append(engine)
    return address


def files_digest(paths):
    """A hash of the names and contents of `paths` (an unreadable file counts as such)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(os.path.basename(path).encode() + b"\0")
        try:
            with open(path, "rb") as f:
                digest.update(f.read())
        except OSError:
            digest.update(b"<unreadable>")
        digest.update(b"\0")
    return digest.hexdigest()


def private(path):
    """Whether `path` (a folder or a file, not a link) may hold code this process runs: owned by
    this user or root and writable by no one else. (A folder under the shared temp dir could
    have been made by another user, who could then plant code in it.)"""
    if not hasattr(os, "getuid"):
        return True
    import stat
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return (not stat.S_ISLNK(st.st_mode) and st.st_uid in (os.getuid(), 0)
            and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def _resolve(llvm, name):
    """Whether LLVM can link `name` (a C library function), telling it where the process has it."""
    if name not in _LIBC:
        return False
    if llvm.address_of_symbol(name) is not None:
        return True
    import ctypes
    import ctypes.util
    for library in (None, ctypes.util.find_library("m")):
        try:
            address = ctypes.cast(getattr(ctypes.CDLL(library), name), ctypes.c_void_p).value
        except (AttributeError, OSError, TypeError):
            continue
        if address:
            llvm.add_symbol(name, address)
            return True
    return False


def host_key():
    """What machine code depends on besides the source: the CPU (name and features) and the
    llvmlite and Numba that compiled it (Numba's installed files, without importing it)."""
    import importlib.util
    import llvmlite
    import llvmlite.binding as llvm
    spec = importlib.util.find_spec("numba")
    numba_file = spec.origin if spec is not None and spec.origin else ""
    try:
        stat = os.stat(numba_file)
        numba_id = f"{numba_file}:{stat.st_size}:{stat.st_mtime_ns}"
    except OSError:
        numba_id = numba_file
    return f"{llvm.get_host_cpu_name()}|{llvm.get_host_cpu_features().flatten()}|{llvmlite.__version__}|{numba_id}"
