"""Settings for the clients group: this machine, where your editor runs (Continue).

Uncomment and edit what you need; anything left out keeps its documented default.
"""

# Where the Continue config goes; the tabbyAPI key is written to .env beside it (mode 0600) and
# config.yaml only refers to it as ${{ secrets.TABBYAPI_API_KEY }}. A config.yaml you changed
# is kept as config.yaml.<time>.bak before it is replaced.
# client_config_path = "~/.continue/config.yaml"
# Which AI guest the editor uses when the inventory has several (its inventory name):
# client_guest = "ai-guest.example.lan"
# The address the editor reaches the guest's APIs at, e.g. "localhost" when you forward the
# ports with an SSH tunnel; empty: the address the services listen on (the guest's LAN address).
# client_api_host = ""
# client_name = "AI coding server"
# Continue roles by served model id, over the derived ones ([] leaves a model out), e.g. an
# autocomplete model you added to ollama_models yourself (without the planner):
# client_model_roles = {"qwen2.5-coder:1.5b-base-q8_0": ["autocomplete"]}
# Continue's autocompleteOptions for the autocomplete model:
# client_autocomplete_options = {
#     "debounceDelay": 250, "maxPromptTokens": 1024, "modelTimeout": 1000
# }
