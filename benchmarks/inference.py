"""Sliding-window inference: mtssl's batched windows vs a per-window loop vs MONAI, on identical windows.

    python benchmarks/inference.py                  # CPU: a 160x128x88 volume, 64x64x48 windows
    python benchmarks/inference.py --device cuda    # LA: 112x112x80 windows, stride 18/18/4, a V-Net

MONAI's ``sliding_window_inference`` gets ``overlap = 1 - stride / patch`` per axis, which places its
windows on the same starts (flush with the far edge); the label agreement compares thresholded outputs.
"""

from __future__ import annotations

import argparse
import math

import torch
from common import timed, write_result

from mtssl.engine.sliding_window import sliding_window, window_starts
from mtssl.nets.vnet import VNet


def per_window(predict, image, patch, stride):
    size = image.shape[1:]
    total, count = None, torch.zeros(size, device=image.device)
    grids = [window_starts(s, p, st) for s, p, st in zip(size, patch, stride)]
    for x in grids[0]:
        for y in grids[1]:
            for z in grids[2]:
                region = (slice(x, x + patch[0]), slice(y, y + patch[1]), slice(z, z + patch[2]))
                prob = predict(image[(slice(None), *region)][None])[0]
                total = torch.zeros((prob.shape[0], *size), device=image.device) if total is None else total
                total[(slice(None), *region)] += prob
                count[region] += 1
    return total / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    la = device.type == "cuda"
    size, patch, stride, filters = (
        ((200, 150, 88), (112, 112, 80), (18, 18, 4), 16) if la else ((160, 128, 88), (64, 64, 48), (32, 32, 20), 4)
    )
    torch.manual_seed(0)
    net = (
        torch.nn.Sequential(VNet(n_filters=filters, has_dropout=False), torch.nn.Conv3d(filters, 1, 1))
        .to(device)
        .eval()
    )
    image = torch.randn(1, *size, device=device)

    @torch.no_grad()
    def predict(windows: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=la):
            return torch.sigmoid(net(windows).float())

    windows = math.prod(len(window_starts(s, p, st)) for s, p, st in zip(size, patch, stride))
    ours = sliding_window(predict, image, patch, stride, batch_size=8)
    loop = per_window(predict, image, patch, stride)
    rows = [
        {
            "method": "mtssl sliding_window (batch 8)",
            "windows": windows,
            "s": timed(lambda: sliding_window(predict, image, patch, stride, 8), device, args.repeats),
        },
        {
            "method": "per-window loop",
            "windows": windows,
            "s": timed(lambda: per_window(predict, image, patch, stride), device, args.repeats),
            "max_abs_diff": float((ours - loop).abs().max()),
            "label_agreement": float(((ours > 0.5) == (loop > 0.5)).float().mean()),
        },
    ]
    try:
        from monai.inferers import sliding_window_inference
    except ImportError:
        rows.append({"method": "MONAI sliding_window_inference", "note": "MONAI is not installed"})
    else:
        overlap = [1 - st / p for st, p in zip(stride, patch)]

        def monai() -> torch.Tensor:
            return sliding_window_inference(image[None], patch, 8, predict, overlap=overlap, mode="constant")[0]

        ref = monai()
        rows.append(
            {
                "method": "MONAI sliding_window_inference",
                "windows": windows,
                "s": timed(monai, device, args.repeats),
                "max_abs_diff": float((ours - ref).abs().max()),
                "label_agreement": float(((ours > 0.5) == (ref > 0.5)).float().mean()),
            }
        )
    write_result("inference", device, rows)


if __name__ == "__main__":
    main()
