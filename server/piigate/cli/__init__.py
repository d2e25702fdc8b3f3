"""The `piigate` command (`main`): `serve` (with `workers`), `check-config`, `explain`,
`audit`. The development stand-ins are the `piigate-dev` command, in `piigate_dev`."""
