import sys
from pathlib import Path

# The repo root holds the roles package and deploy.py; tests import them as users' pyinfra does.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
