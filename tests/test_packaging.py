"""Every folder of Python modules under diffx/ is a regular package, so a wheel includes it
(setuptools' find_packages skips folders without __init__.py)."""

from pathlib import Path

import diffx


def test_every_module_folder_has_an_init():
    root = Path(diffx.__file__).parent
    missing = [
        str(folder.relative_to(root))
        for folder in root.rglob("*")
        if folder.is_dir()
        and folder.name != "__pycache__"
        and any(folder.glob("*.py"))
        and not (folder / "__init__.py").exists()
    ]
    assert not missing, f"folders without __init__.py: {missing}"
