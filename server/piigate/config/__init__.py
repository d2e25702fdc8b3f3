"""Gateway configuration: one TOML file, read once, validated completely, frozen.

Every mistake is reported with its key path (`profiles.support.fields.ssn: ...`), all of
them at once, so an operator fixes a file in one pass. Secrets never live in the file:
a profile names the environment variable or file that holds its vault API key, and this
package is the only place that reads either (style lesson 4).

`model` holds the frozen result; `reader` the problem-collecting walker; `issuers` and
`profiles` their sections; `load` the file and the cross-section checks. A complete
annotated example is in README.md ("Configuration").
"""

from piigate.config.load import load_config, parse_config
from piigate.config.model import (
    ASYMMETRIC_ALGORITHMS,
    DEFAULT_PII_TOKEN_CLAIM,
    PIIANO_REASONS,
    PROPERTY_NAME,
    AbuseLimits,
    AuditConfig,
    CallerConfig,
    ConfigError,
    Disposition,
    GatewayConfig,
    IssuerConfig,
    JwksConfig,
    Profile,
    ServerConfig,
    StepUp,
    TlsConfig,
    TypRule,
    VaultConfig,
)

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "DEFAULT_PII_TOKEN_CLAIM",
    "PIIANO_REASONS",
    "PROPERTY_NAME",
    "AbuseLimits",
    "AuditConfig",
    "CallerConfig",
    "ConfigError",
    "Disposition",
    "GatewayConfig",
    "IssuerConfig",
    "JwksConfig",
    "Profile",
    "ServerConfig",
    "StepUp",
    "TlsConfig",
    "TypRule",
    "VaultConfig",
    "load_config",
    "parse_config",
]  # fmt: skip
