// Pins the Alertmanager that the alert-chain test runs (tests/test_alert_chain.py; make alertmanager).
// Its module cannot be built in place: cmd/alertmanager embeds the web UI's built assets (ui/app/dist),
// which the published module leaves out. So `make alertmanager` downloads the module named here,
// checked against go.sum, copies it, gives the UI a one-page placeholder (placeholder.html) and builds
// cmd/alertmanager in the copy, whose own go.mod and go.sum pin and check every dependency.
// No package here imports it: `go mod tidy` would drop the requirement. Edit the version by hand and
// take the module's two go.sum lines from `go mod download -json github.com/prometheus/alertmanager@vX`.
module jupyterhub-canary/tools/alertmanager

go 1.26.0

require github.com/prometheus/alertmanager v0.35.0
