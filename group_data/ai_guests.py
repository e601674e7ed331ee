"""Settings for the AI guest group (NVIDIA driver, Docker, tabbyAPI, Ollama)."""

# --- tabbyAPI (roles/tabbyapi): exllamav3, EXL3 models, OpenAI-compatible API with keys --------
# The API key and admin key come from the secrets tabbyapi_api_key / tabbyapi_admin_key
# (AICODER_TABBYAPI_API_KEY=... or secrets.yml); they are generated once if you give none.
# tabbyapi_host = "auto"                  # all addresses, behind the firewall; "127.0.0.1": local only
# tabbyapi_port = 5000
# Where the code comes from (a local mirror path works; None: no source, nothing is started):
# tabbyapi_git_url = "https://github.com/theroyallab/tabbyAPI"
# tabbyapi_git_ref = "e632af41eba68abeadc3437c62674360f2f8cbf1"
# tabbyapi_pip_extras = ["cu12"]          # cu13 needs Python 3.12+ (Debian 12 has 3.11, Debian 13 3.13)
# The model (an EXL3 quant; one branch per bit rate) and how it is served:
# tabbyapi_model_repo = "ArtusDev/Qwen_Qwen3-Coder-30B-A3B-Instruct-EXL3"
# tabbyapi_model_revision = "4.0bpw_H6"
# tabbyapi_hf_token_required = False     # True for gated repos: set the secret hf_token
# tabbyapi_max_seq_len = 32768
# tabbyapi_cache_mode = "8,8"             # FP16, Q8, Q6, Q4 or "k,v" bits from 2 to 8
# Speculative decoding with a small draft model of the same family:
# tabbyapi_draft_model_repo = "turboderp/Qwen3-0.6B-exl3"
# tabbyapi_draft_model_revision = "4.0bpw"
# Several GPUs: a manual split in GB per GPU, or tensor parallelism:
# tabbyapi_gpu_split_auto = False
# tabbyapi_gpu_split = [20, 24]
# tabbyapi_tensor_parallel = True
# Any other config.yml option (see upstream's config_sample.yml):
# tabbyapi_config_overrides = {"model": {"chunk_size": 1024}}

# --- Ollama (roles/ollama): embeddings and GGUF models, docker compose --------------------------
# Ollama has no authentication: it is published on one address only, never on all interfaces.
# ollama_bind_address = "auto"            # all addresses, behind the firewall; "127.0.0.1": local only
# ollama_port = 11434
# ollama_image = "ollama/ollama:0.32.15"
# ollama_image_archive = "/srv/images/ollama-0.32.15.tar"   # air-gapped: `docker save` output
# ollama_models = ["nomic-embed-text"]
# ollama_gpu = True                       # False: CPU only
# ollama_keep_alive = "5m"
# ollama_kv_cache_type = "q8_0"
# ollama_context_length = 8192

# --- Hugging Face CLI (roles/hf_tools): `hf download ...` for your own downloads ---------------
# hf_tools_huggingface_hub_version = "2.4.0"

# --- Model planner (roles/planner): backend and quant chosen from the GPU's memory -------------
# With a chat model set, the planner fills the tabbyapi_model_*/max_seq_len, ollama_models and
# ollama_context_length settings you leave out, by the rule: a model that fits in VRAM runs on
# tabbyAPI as EXL3 (the highest of 8.0/6.0/5.0/4.0 bpw that fits); one that does not runs on
# Ollama as GGUF (Q8_0 to Q4_K_M), spilling into system RAM if it must. Chat, autocomplete and
# embeddings share the card. The plan's table is printed before the deploy; try it first with
# `python -m roles.planner --vram 24 --chat qwen2.5-coder-32b` (--list shows the models).
# planner_chat_model = "qwen3-coder-30b-a3b"
# planner_autocomplete_model = "qwen2.5-coder-1.5b-base"   # empty: that when it fits, else the chat model
# planner_embed_model = "nomic-embed-text"
# planner_vram_gib = 24.0                 # 0: read from nvidia-smi (after the driver is installed)
# planner_chat_context = 16384
# planner_ram_offload_gib = 16.0          # how much of a too-big chat model may sit in RAM
# planner_reserve_gib = 1.0               # VRAM kept free on each GPU (process overheads come on top)
# planner_draft_model = "qwen3-0.6b"      # the draft tabbyAPI loads (tabbyapi_draft_model_repo)

# --- NVIDIA driver (roles/nvidia_driver) -----------------------------------------------------
# nvidia_driver_source = "nvidia"         # NVIDIA's CUDA repo; "debian": the release's own driver:
#                                         # Debian 13's 550 serves Ollama on the GPU, Debian 12's
#                                         # 535 is too old for it (then also ollama_gpu = False)
# nvidia_driver_branch = "580"            # with "nvidia": the branch apt is pinned to (570+: RTX 50xx)
# nvidia_driver_nvidia_packages = ["nvidia-driver-cuda", "nvidia-kernel-open-dkms", "nvidia-persistenced"]
# nvidia_driver_cuda_repo_url = ""       # empty: NVIDIA's repo for the guest's release (.../debian13/x86_64)
# nvidia_driver_kernel_flavour = "amd64"  # linux-image-/linux-headers-<flavour>; "cloud-amd64"
# nvidia_driver_reboot = False            # True: reboot when the driver needs it, check it, go on
#                                         # (the VMs this project creates: True, see inventory.py)
# nvidia_driver_secure_boot_mok = False   # True once DKMS's key is enrolled as a MOK

# --- Docker (roles/docker) ---------------------------------------------------------------------
# docker_source = "docker"                # Docker's repo (compose v2); "debian": docker.io + Debian's
#                                         # compose (Debian 12: 1.29, v1; Debian 13: v2)
# docker_repo_url = "https://download.docker.com/linux/debian"   # a mirror: key URL = <url>/gpg
# docker_version = ""                     # as `apt-cache madison docker-ce` shows it; empty: the newest
# docker_users = ["alice"]                # existing users, besides base_admin_user
# Keys the deploy owns in /etc/docker/daemon.json (merged; other keys in the file are kept):
# docker_daemon_options = {"log-driver": "json-file", "log-opts": {"max-size": "10m", "max-file": "3"}}

# --- NVIDIA container toolkit (roles/container_toolkit) ------------------------------------------
# container_toolkit_enabled = True
# container_toolkit_repo_url = "https://nvidia.github.io/libnvidia-container"   # key: <url>/gpgkey
# container_toolkit_version = "1.17.8-1"  # empty: the newest
# container_toolkit_default_runtime = False   # True: every container gets the nvidia runtime
