"""Builds mechinterp inside evcxr's persistent build folder by starting the "Rust (mechinterp)"
kernel once and running one cell, with a clock while it compiles (the kernel's own "Compiling …"
lines go to this terminal); then starts a fresh kernel and times its first cell, which is what a
JupyterLab user waits for. Run by scripts/install-kernel.sh with the kernel's virtualenv."""
import sys
import threading
import time

from jupyter_client.manager import KernelManager

CELL = 'let t = Tensor::ones(3, DType::F32, &Device::Cpu)?;\nprintln!("kernel ready: {} (sum {})", HookPoint::Embed, t.sum_all()?.to_scalar::<f32>()?);'


def run_once(label, clock):
    """Starts a kernel, runs CELL, returns (seconds from start to the answer, output)."""
    t0 = time.time()
    done = threading.Event()

    def tick():
        while not done.wait(30):
            print(f"  … {label}: {time.time() - t0:.0f} s", file=sys.stderr, flush=True)

    if clock:
        threading.Thread(target=tick, daemon=True).start()
    km = KernelManager(kernel_name="mechinterp")
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=3600)
        out = []
        reply = kc.execute_interactive(
            CELL,
            timeout=3600,
            output_hook=lambda m: out.append(m["content"].get("text", "")),
        )
        if reply["content"]["status"] != "ok":
            raise SystemExit(f"the kernel failed the cell: {reply['content']}")
        return time.time() - t0, "".join(out)
    finally:
        done.set()
        kc.stop_channels()
        km.shutdown_kernel(now=True)


build, out = run_once("compiling mechinterp in evcxr", clock=True)
if "kernel ready" not in out:
    raise SystemExit(f"the warm-up cell printed {out!r}")
print(f"evcxr build folder ready: first start compiled mechinterp in {build:.0f} s", flush=True)
first, _ = run_once("fresh kernel", clock=False)
print(f"a fresh kernel now answers its first cell {first:.1f} s after starting", flush=True)
