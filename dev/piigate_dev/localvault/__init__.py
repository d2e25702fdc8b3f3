"""The local vault: a development stand-in for Piiano Vault, speaking its REST API.

`create_vault_app(config)` builds it in-process; `piigate-dev local-vault` serves it.
"""

from piigate_dev.localvault.app import create_vault_app
from piigate_dev.localvault.config import ConfigError, VaultConfig, load_vault_config

__all__ = ["ConfigError", "VaultConfig", "create_vault_app", "load_vault_config"]
