import subprocess
import sys

HEAVY = ("monai", "segmentation_models_pytorch", "timm", "kornia")


def test_listing_and_building_a_3d_model_imports_no_heavy_package():
    code = (
        "import sys, torch, mtssl\n"
        "from mtssl.registry import BACKBONES, TASKS\n"
        "BACKBONES.names(); TASKS.names()\n"
        "m = mtssl.build_model({'backbone': {'name': 'vnet', 'n_filters': 4}, 'tasks': {'seg': {}, 'sdf': {}}})\n"
        "m(torch.randn(2, 1, 16, 16, 16))\n"
        f"print([p for p in {HEAVY!r} if p in sys.modules])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
