"""One process of the experiment.

usage: python exp.py MODE PHASE
  MODE  mega        regional compile via module.compile(fullgraph=True) + mega-cache only (today's setup)
        precompile  same + torch._dynamo.config.caching_precompile=True (DynamoCache inside the mega-cache)
        precompile_fwd  caching_precompile, but compile each block's bound forward instead of module.compile
        aot         torch.compile(Cls.forward, fullgraph=True).aot_compile(...) per block class and shape,
                    save_compiled_function / torch.compiler.load_compiled_function, installed on every instance
  PHASE cold (compile + save artifacts) | warm (fresh process, fresh TORCHINDUCTOR_CACHE_DIR, load artifacts)
Run with a fresh TORCHINDUCTOR_CACHE_DIR each time (run.sh does) so a warm process sees only what was saved.
"""
import json
import os
import sys
import time
import types

MODE, PHASE = sys.argv[1], sys.argv[2]
ART = os.path.join(os.path.dirname(os.path.abspath(__file__)), "art", MODE)
os.makedirs(ART, exist_ok=True)

t_import = time.perf_counter()
import torch  # noqa: E402
import torch._dynamo  # noqa: E402
from torch._dynamo.utils import counters  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
if os.environ.get("MODEL", "tiny") == "flux":
    from flux_model import DoubleBlock, SingleBlock, Tiny, block_args, make_inputs  # noqa: E402
    ART = ART + "_flux"
    os.makedirs(ART, exist_ok=True)
else:
    from model import DoubleBlock, SingleBlock, Tiny, block_args, make_inputs  # noqa: E402

t_import = time.perf_counter() - t_import
torch.manual_seed(0)
torch.set_num_threads(1)
SHAPES = [(1, 32), (1, 48), (2, 32)]  # (batch, image tokens): static shapes, like warm-up sizes x batch sizes
model = Tiny().eval()
torch._dynamo.config.recompile_limit = 64
if MODE.startswith("precompile"):
    torch._dynamo.config.caching_precompile = True
if MODE == "aot":
    torch._dynamo.config.enable_aot_compile = True  # False by default in 2.11, True in 2.13

if os.environ.get("COUNTER_BUMP") == "1":
    # Work-around: names Dynamo installs into module globals come from one process-wide counter
    # (torch._dynamo.bytecode_transformation.unique_id). A fresh process restarts it at 0, so the
    # first *new* trace after loading a package collides with the "__builtins_dict___N" the package
    # installed -> AssertionError in CleanupHook.create. Start the counter far past any saved name.
    import itertools
    import torch._dynamo.bytecode_transformation as _bt
    import random
    _bt._unique_id_counter = itertools.count(random.SystemRandom().randrange(10**9, 10**12))
if os.environ.get("PATCH_REDUCE") == "1":
    # torch 2.11 bug (fixed by 2.13): dataclass_with_cached_hash.__reduce__ pickles init=False fields
    # too, so e.g. DefaultsSource (a guard on a function's __defaults__) cannot be unpickled:
    # "TypeError: DefaultsSource.__init__() takes from 3 to 4 positional arguments but 6 were given".
    # Needed in the process that SAVES as well as the one that loads.
    import dataclasses
    import torch._dynamo.source as _src
    import torch._guards as _tg

    def _reduce_init_fields(self):
        return (self.__class__, tuple(getattr(self, f.name) for f in dataclasses.fields(self) if f.init))

    for _mod in (_src, _tg):
        for _obj in vars(_mod).values():
            if (isinstance(_obj, type) and dataclasses.is_dataclass(_obj)
                    and any(not f.init for f in dataclasses.fields(_obj))
                    and "__reduce__" in vars(_obj)):
                _obj.__reduce__ = _reduce_init_fields
UNSERIALIZABLE = ("DICT_VERSION", "NN_MODULE", "ID_MATCH", "FUNCTION_MATCH", "CLASS_MATCH", "MODULE_MATCH",
                  "CLOSURE_MATCH", "WEAKREF_ALIVE")


def serializable_guards_only(entries):
    # Drops what torch 2.11 cannot round-trip: identity-style guards (also when only a derived type is
    # one, which aot_compile's default filter misses: "PackageError: ID_MATCH guard cannot be
    # serialized"), and guards rooted in a function's __defaults__/__kwdefaults__ (DefaultsSource does
    # not unpickle in 2.11: "TypeError: DefaultsSource.__init__() takes from 3 to 4 positional
    # arguments but 6 were given"). Unsafe in general: fine while the code and its defaults are fixed.
    if os.environ.get("DEBUG_FILTER"):
        for e in entries:
            if "processor" in e.name and "__code__" in e.name:
                print("FILTER-SEES", e.name, e.guard_type, e.derived_guard_types, flush=True)
    return [not (e.is_global or e.guard_type in UNSERIALIZABLE
                 or any(d in UNSERIALIZABLE for d in (e.derived_guard_types or ()))
                 or "__defaults__" in e.name or "__kwdefaults__" in e.name) for e in entries]


_gf = os.environ.get("GUARD_FILTER")
COMPILE_OPTS = ({"options": {"guard_filter_fn": serializable_guards_only}} if _gf == "1" else
                {"options": {"guard_filter_fn": torch.compiler.keep_portable_guards_unsafe}} if _gf == "portable" else {})
timing = {"torch": torch.__version__, "model": os.environ.get("MODEL", "tiny"), "mode": MODE, "guard_filter": os.environ.get("GUARD_FILTER"), "counter_bump": os.environ.get("COUNTER_BUMP") == "1", "patch_reduce": os.environ.get("PATCH_REDUCE") == "1", "phase": PHASE, "import_s": round(t_import, 2)}
mega = os.path.join(ART, "mega.bin")

t0 = time.perf_counter()
if PHASE == "warm" and MODE != "aot":
    # caching_precompile looks the DynamoCache up when torch.compile() wraps the function, so the
    # mega-cache must be loaded BEFORE compiling (today's engine loads it after compile_repeated_blocks).
    info = torch.compiler.load_cache_artifacts(open(mega, "rb").read())
    timing["loaded_artifacts"] = {k: len(v) for k, v in (info.artifacts if info else {}).items()}
timing["load_mega_s"] = round(time.perf_counter() - t0, 3)

t0 = time.perf_counter()
# caching_precompile rebuilds the loaded guards when torch.compile() wraps the function; tensor guards
# fold in the thread-local dispatch-key state of that moment, so wrap under the same inference_mode the
# calls run in (otherwise every loaded entry misses: "dispatch key set mismatch").
wrap_ctx = torch.inference_mode() if os.environ.get("WRAP_IN_INFERENCE", "1") == "1" else torch.no_grad()
wrap_ctx.__enter__()
if MODE in ("mega", "precompile"):
    for m in model.modules():  # what diffusers' compile_repeated_blocks does
        if type(m) in (DoubleBlock, SingleBlock):
            m.compile(fullgraph=True, dynamic=False)
elif MODE == "precompile_cls":
    # one torch.compile wrapper per block CLASS (unbound forward), bound onto every instance:
    # DynamoCache key = qualname+line of DoubleBlock.forward / SingleBlock.forward, loaded once per class
    for cls in (DoubleBlock, SingleBlock):
        compiled_fwd = torch.compile(cls.forward, fullgraph=True, dynamic=False, **COMPILE_OPTS)
        for m in model.modules():
            if type(m) is cls:
                m.forward = types.MethodType(compiled_fwd, m)
elif MODE == "precompile_fwd":
    for m in model.modules():
        if type(m) in (DoubleBlock, SingleBlock):
            m.forward = torch.compile(m.forward, fullgraph=True, dynamic=False)
elif MODE == "aot":
    compiled = {DoubleBlock: [], SingleBlock: []}
    if PHASE == "cold":
        with torch.inference_mode():
            for cls in compiled:
                blk = next(m for m in model.modules() if type(m) is cls)
                wrapped = torch.compile(cls.forward, fullgraph=True, dynamic=False, **COMPILE_OPTS)
                for i, (b, s) in enumerate(SHAPES):
                    args = block_args(cls, blk, make_inputs(b, s))
                    fn = wrapped.aot_compile((args, {}))
                    fn.save_compiled_function(os.path.join(ART, f"{cls.__name__}_{i}.pt2"))
                    compiled[cls].append(fn)
    else:
        for cls in compiled:
            i = 0
            while os.path.exists(p := os.path.join(ART, f"{cls.__name__}_{i}.pt2")):
                with open(p, "rb") as f:
                    compiled[cls].append(torch.compiler.load_compiled_function(f))
                i += 1

    def dispatcher(fns):
        def run(self, *args):
            for fn in fns:  # one AOTCompiledFunction per static shape; pick the one whose guards pass
                if fn.guard_check(self, *args):
                    return fn(self, *args)
            raise RuntimeError("no precompiled graph for these inputs")
        return run

    for m in model.modules():
        if type(m) in compiled:
            m.forward = types.MethodType(dispatcher(compiled[type(m)]), m)
wrap_ctx.__exit__(None, None, None)
timing["compile_or_load_s"] = round(time.perf_counter() - t0, 3)

ref_model = Tiny().eval()
ref_model.load_state_dict(model.state_dict())
first = []
max_err = 0.0
with torch.inference_mode():
    for b, s in SHAPES:
        x = make_inputs(b, s)
        t0 = time.perf_counter()
        y = model(*x)
        first.append(round(time.perf_counter() - t0, 3))
        max_err = max(max_err, (y - ref_model(*x)).abs().max().item())
    t0 = time.perf_counter()
    for _ in range(5):
        for b, s in SHAPES:
            model(*make_inputs(b, s))
    steady = (time.perf_counter() - t0) / 5
if PHASE == "warm" and os.environ.get("EXTRA_SHAPE") == "1":
    # a shape that was never compiled: does Dynamo fall back to a normal compile after a load?
    try:
        with torch.inference_mode():
            x = make_inputs(1, 64)
            t0 = time.perf_counter()
            y = model(*x)
            timing["extra_shape_s"] = round(time.perf_counter() - t0, 3)
            timing["extra_shape_err"] = (y - ref_model(*x)).abs().max().item()
    except Exception as e:
        import traceback
        tb = traceback.extract_tb(e.__traceback__)[-3:]
        timing["extra_shape_error"] = f"{type(e).__name__}: {e}"[:300] + " at " + " <- ".join(f"{f.name}:{f.line}" for f in reversed(tb))
timing["first_call_s_per_shape"] = first
timing["warmup_total_s"] = round(sum(first) + timing["compile_or_load_s"] + timing["load_mega_s"], 3)
timing["steady_all_shapes_s"] = round(steady, 4)
timing["max_abs_err_vs_eager"] = max_err

if PHASE == "cold" and MODE != "aot":
    t0 = time.perf_counter()
    data, info = torch.compiler.save_cache_artifacts()
    open(mega, "wb").write(data)
    timing["save_s"] = round(time.perf_counter() - t0, 3)
    timing["saved_artifacts"] = {k: len(v) for k, v in info.artifacts.items()}
    timing["mega_bytes"] = len(data)

if PHASE == "warm" and os.environ.get("RESAVE") == "1":
    # what would a warm process write back (the engine saves after every warm-up)?
    saved = torch.compiler.save_cache_artifacts()
    timing["resave_artifacts"] = {k: len(v) for k, v in saved[1].artifacts.items()} if saved else None
    timing["resave_bytes"] = len(saved[0]) if saved else 0

c = {k: dict(v) for k, v in counters.items() if k in ("stats", "frames", "dynamo_cache", "aot_autograd", "inductor")}
c.get("inductor", {}).pop("pattern_matcher_nodes", None)
c.get("inductor", {}).pop("pattern_matcher_count", None)
timing["counters"] = {k: {kk: vv for kk, vv in v.items() if "cache" in kk or k in ("stats", "frames", "dynamo_cache")} for k, v in c.items()}
timing["compile_times"] = {k: [round(sum(v), 3), len(v)] for k, v in torch._dynamo.utils.compilation_time_metrics.items()}
timing["per_call"] = {k: [round(x, 3) for x in v] for k, v in torch._dynamo.utils.compilation_time_metrics.items()
                      if k in ("_compile.compile_inner", "bytecode_tracing", "build_guards", "OutputGraph.call_user_compiler",
                               "AOTAutogradCache.inductor_load", "after_deserialization", "precompile_build_guards", "fullgraph_capture")}
print("RESULT " + json.dumps(timing))
