"""save DIR: the random full-size pipeline as a diffusers directory (safetensors). load DIR: time loading it to the GPU."""
import gc, sys, time
import torch
from diffusers import FluxKontextPipeline, FluxTransformer2DModel
from transformers import T5EncoderModel
from kontext_engine.random_model import build_random_pipeline

what, directory = sys.argv[1], sys.argv[2]


def straight_to_gpu():
    device = torch.device("cuda", 0)
    transformer = FluxTransformer2DModel.from_pretrained(directory, subfolder="transformer", torch_dtype=torch.bfloat16,
                                                         device_map={"": device})
    t5 = T5EncoderModel.from_pretrained(directory, subfolder="text_encoder_2", dtype=torch.bfloat16, device_map={"": device})
    return FluxKontextPipeline.from_pretrained(directory, transformer=transformer, text_encoder_2=t5,
                                               dtype=torch.bfloat16).to(device)


if what == "save":
    started = time.perf_counter()
    build_random_pipeline(torch.device("cuda", 0), torch.bfloat16).save_pretrained(directory, safe_serialization=True)
    print(f"saved in {time.perf_counter() - started:.1f} s", flush=True)
else:
    methods = {
        "from_pretrained then .to(cuda:0)": lambda: FluxKontextPipeline.from_pretrained(directory, dtype=torch.bfloat16).to("cuda:0"),
        "pipeline from_pretrained device_map=cuda": lambda: FluxKontextPipeline.from_pretrained(directory, dtype=torch.bfloat16, device_map="cuda"),
        "transformer and T5 with device_map={'': cuda:0}, rest .to": straight_to_gpu,
    }
    for name in [*methods, *methods]:
        torch.cuda.synchronize(); started = time.perf_counter()
        pipeline = methods[name]()
        torch.cuda.synchronize()
        print(f"{name}: {time.perf_counter() - started:.1f} s, {torch.cuda.memory_allocated() / 2**30:.1f} GiB on the GPU", flush=True)
        del pipeline; gc.collect(); torch.cuda.empty_cache()
