"""Settings for the AI guest group (NVIDIA driver, Docker, tabbyAPI, Ollama)."""
