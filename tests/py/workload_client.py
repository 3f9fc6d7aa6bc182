"""Drives Ferrid's Workload API with py-spiffe (the `spiffe` package from PyPI).

Run by tests/pyspiffe_e2e.rs against a real `ferrid agent`; SPIFFE_ENDPOINT_SOCKET
names the agent's socket. Modes:

  basic   one JSON object on stdout with what every client call returned
  stream  one JSON line per X.509 context received on the update stream
"""
import json
import sys

from spiffe import JwtSource, WorkloadApiClient, X509Source, TrustDomain
from spiffe.svid.jwt_svid import JwtSvid


def basic() -> dict:
    out = {}
    with WorkloadApiClient() as client:
        svid = client.fetch_x509_svid()
        out["x509_id"] = str(svid.spiffe_id)
        out["x509_chain_len"] = len(svid.cert_chain)
        ctx = client.fetch_x509_context()
        out["x509_svids"] = sorted(str(s.spiffe_id) for s in ctx.x509_svids)
        bundles = client.fetch_x509_bundles()
        td = TrustDomain(svid.spiffe_id.trust_domain.name)
        out["x509_authorities"] = len(bundles.get_bundle_for_trust_domain(td).x509_authorities)

        jwt = client.fetch_jwt_svid(audience={"py-audience"})
        out["jwt_id"] = str(jwt.spiffe_id)
        validated = client.validate_jwt_svid(jwt.token, "py-audience")
        out["jwt_validated_id"] = str(validated.spiffe_id)
        try:
            client.validate_jwt_svid(jwt.token, "someone-else")
            out["wrong_audience"] = "accepted"
        except Exception as e:  # noqa: BLE001 - the error type is the library's
            out["wrong_audience"] = type(e).__name__
        # Offline validation with the fetched JWT bundle (py-spiffe verifies the signature).
        jwt_bundles = client.fetch_jwt_bundles()
        offline = JwtSvid.parse_and_validate(jwt.token, jwt_bundles.get_bundle_for_trust_domain(td), {"py-audience"})
        out["jwt_offline_id"] = str(offline.spiffe_id)

    with X509Source(timeout_in_seconds=30) as source:
        out["x509_source_id"] = str(source.get_x509_context().default_svid.spiffe_id)
    with JwtSource(timeout_in_seconds=30) as source:
        out["jwt_source_id"] = str(source.fetch_svid(audience={"py-audience"}).spiffe_id)
        out["jwt_source_bundles"] = len(source.bundles)
    return out


def stream() -> None:
    def on_success(ctx) -> None:
        ids = sorted(str(s.spiffe_id) for s in ctx.x509_svids)
        serials = sorted(s.leaf.serial_number for s in ctx.x509_svids)
        print(json.dumps({"ids": ids, "serials": [str(s) for s in serials]}), flush=True)

    def on_error(err: Exception) -> None:
        print(json.dumps({"error": str(err)}), flush=True)

    client = WorkloadApiClient()
    handle = client.stream_x509_contexts(on_success=on_success, on_error=on_error)
    # The test closes stdin when it is done.
    sys.stdin.read()
    handle.cancel()
    client.close()


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else "basic"
    if mode == "basic":
        print(json.dumps(basic()))
    elif mode == "stream":
        stream()
    else:
        sys.exit(f"unknown mode {mode}")
