"""Gateway configuration: one TOML file, read once, validated completely, frozen.

Every mistake is reported with its key path (`profiles.support.fields.ssn: ...`), all of
them at once, so an operator fixes a file in one pass. Secrets never live in the file:
a profile names the environment variable or file that holds its vault API key, and this
package is the only place that reads either (style lesson 4).

`model` holds the frozen result; `reader` the problem-collecting walker; `issuers` and
`profiles` their sections (`introspection` an opaque issuer's keys); `load` the file and
the cross-section checks; `message_size` whether a full batch fits in one gRPC message;
`secrets` who may read a key file and how secret files are reloaded (SIGHUP, on change);
`network` the proxies the environment names and TLS to the vault. A
complete annotated example is in README.md ("Configuration"), and a test holds it to every
key the loader accepts.
"""

from piigate.config.load import load_config, parse_config
from piigate.config.model import (
    ASYMMETRIC_ALGORITHMS,
    DEFAULT_PII_TOKEN_CLAIM,
    PIIANO_REASONS,
    PROPERTY_NAME,
    SUBJECT_RESOLUTIONS,
    AbuseLimits,
    ActorRule,
    AuditConfig,
    CallerConfig,
    ConfigError,
    Disposition,
    GatewayConfig,
    IntrospectionConfig,
    IssuerConfig,
    JwksConfig,
    Profile,
    ServerConfig,
    StepUp,
    SubjectResolution,
    TlsConfig,
    TypRule,
    VaultConfig,
)

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "DEFAULT_PII_TOKEN_CLAIM",
    "PIIANO_REASONS",
    "PROPERTY_NAME",
    "SUBJECT_RESOLUTIONS",
    "AbuseLimits",
    "ActorRule",
    "AuditConfig",
    "CallerConfig",
    "ConfigError",
    "Disposition",
    "GatewayConfig",
    "IntrospectionConfig",
    "IssuerConfig",
    "JwksConfig",
    "Profile",
    "ServerConfig",
    "StepUp",
    "SubjectResolution",
    "TlsConfig",
    "TypRule",
    "VaultConfig",
    "load_config",
    "parse_config",
]  # fmt: skip
