import sys
from pathlib import Path

# harness.py is imported by the plan tests as a plain module.
sys.path.insert(0, str(Path(__file__).resolve().parent))
