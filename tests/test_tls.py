"""TLS to the hub: an untrusted certificate is named as the cause, and --ca-bundle makes it trusted.

The HTTPS Secret stub stands in for a hub with a certificate from a private CA: it is no hub, so
once TLS succeeds it answers 404 for /hub/api/, which the canary reports as a wrong hub URL.
"""

from __future__ import annotations

from app.exit_codes import ExitCode
from tests.runner import finish_process, run_main, start_process

TOKEN = "tls-test-token-0123456789abcdef"


def canary(url, *extra):
    return run_main(["--hub-url", url, "--user", "u", "--attempts", "1", "--stop-timeout", "2", *extra],
                    env={"JUPYTERHUB_API_TOKEN": TOKEN})


def test_an_untrusted_certificate_is_named_and_not_retried(secret_stub):
    run = canary(secret_stub.url)
    assert run.exit_code == ExitCode.HUB_UNAVAILABLE, run.output
    assert "TLS verification failed" in run.result["message"] and "--ca-bundle" in run.result["message"]
    assert not run.named("request_retry"), "a certificate does not fix itself: no retries"
    run.assert_no_secret(TOKEN)


def test_ca_bundle_makes_the_certificate_trusted(secret_stub):
    run = canary(secret_stub.url, "--ca-bundle", str(secret_stub.ca_file))
    assert run.exit_code == ExitCode.HUB_UNAVAILABLE, run.output
    assert "TLS" not in run.result["message"] and "the hub's public URL?" in run.result["message"]


def test_insecure_skip_tls_verify_warns(secret_stub):
    run = canary(secret_stub.url, "--insecure-skip-tls-verify")
    assert run.named("tls_verification_disabled")[0]["level"] == "warning"
    assert "TLS" not in run.result["message"]


def test_insecure_skip_tls_verify_writes_only_json_lines(secret_stub):
    """urllib3's InsecureRequestWarning would be a raw line on stderr with every request: only the
    canary's own warning is written, in the JSON log. A child process: pytest captures warnings."""
    process = start_process(["--hub-url", secret_stub.url, "--user", "u", "--attempts", "1", "--stop-timeout", "2",
                             "--deadline", "6", "--insecure-skip-tls-verify", "--termination-log", "/dev/null"],
                            env={"JUPYTERHUB_API_TOKEN": TOKEN})
    run = finish_process(process, timeout=60)  # parses every line as one JSON object
    assert run.exit_code == ExitCode.HUB_UNAVAILABLE, run.output
    assert "InsecureRequestWarning" not in run.output
    assert len(run.named("tls_verification_disabled")) == 1
    run.assert_no_secret(TOKEN)
