"""Peak memory (RSS) of paper-AlexNet training steps, measured in a fresh process.

    python -m benchmarks.rss minialex 16 2     # framework, batch, threads

Prints JSON: the peak RSS of the whole process (VmHWM) and the RSS after the
model was built, in MiB.
"""

import json
import sys


def _rss_mib(field):
    with open("/proc/self/status") as file:
        for line in file:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return None


def main(argv):
    framework, batch, threads = argv[0], int(argv[1]), int(argv[2])
    if framework == "torch":
        import torch  # noqa: PLC0415

        torch.set_num_threads(threads)
        from benchmarks.cpu import torch_train_step  # noqa: PLC0415

        step = torch_train_step(torch, batch)
    else:
        from benchmarks.cpu import minialex_train_step  # noqa: PLC0415

        step = minialex_train_step(batch)
    after_build = _rss_mib("VmRSS")
    for _ in range(3):
        step()
    print(json.dumps({"framework": framework, "batch": batch, "peak_rss_mib": _rss_mib("VmHWM"),
                      "rss_after_build_mib": after_build}))


if __name__ == "__main__":
    main(sys.argv[1:])
