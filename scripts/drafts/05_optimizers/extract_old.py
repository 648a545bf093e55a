"""Write the cells of 05 as committed before its rebuild (f5bc6b0) into old/, which gen.py reads."""
import json
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
text = subprocess.run(["git", "show", "f5bc6b0:notebooks/05_optimizers_from_scratch.ipynb"], capture_output=True, text=True,
                      check=True, cwd=HERE).stdout
(HERE / "old").mkdir(exist_ok=True)
for i, cell in enumerate(json.loads(text)["cells"]):
    (HERE / "old" / f"{i:02d}.{'md' if cell['cell_type'] == 'markdown' else 'py'}").write_text("".join(cell["source"]))
