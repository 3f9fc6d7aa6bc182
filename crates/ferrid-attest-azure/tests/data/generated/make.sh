#!/bin/sh
# Regenerates the documents in this folder (OpenSSL 3). Not run by the tests: the
# outputs are committed. A throwaway CA stands in for Microsoft's: root -> intermediate
# -> leaf "metadata.azure.com", plus a self-signed look-alike leaf and a leaf for another
# name. content.json is the input: set its timeStamp a little after the moment you run
# this (the certificates start now) and update GENERATED in tests/common/mod.rs.
set -eu
cd "$(dirname "$0")"
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
cat > "$T/ext.cnf" <<'CNF'
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
[leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = DNS:eastus.metadata.azure.com, DNS:metadata.azure.com
[other]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = DNS:login.example.com
CNF
key() { openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1" 2>/dev/null; }
key "$T/root.key"; key "$T/int.key"; key "$T/leaf.key"; key "$T/fake.key"; key "$T/other.key"
openssl req -x509 -new -key "$T/root.key" -subj "/CN=Ferrid Test Root" -days 7300 -sha256 \
  -extensions ca -config "$T/ext.cnf" -out test-root.pem
openssl req -new -key "$T/int.key" -subj "/CN=Ferrid Test Issuing CA" -out "$T/int.csr"
openssl x509 -req -in "$T/int.csr" -CA test-root.pem -CAkey "$T/root.key" -CAcreateserial -days 7000 \
  -sha256 -extfile "$T/ext.cnf" -extensions ca -out test-intermediate.pem
openssl req -new -key "$T/leaf.key" -subj "/CN=metadata.azure.com" -out "$T/leaf.csr"
openssl x509 -req -in "$T/leaf.csr" -CA test-intermediate.pem -CAkey "$T/int.key" -CAcreateserial \
  -days 3650 -sha256 -extfile "$T/ext.cnf" -extensions leaf -out "$T/leaf.pem"
openssl req -new -key "$T/other.key" -subj "/CN=login.example.com" -out "$T/other.csr"
openssl x509 -req -in "$T/other.csr" -CA test-intermediate.pem -CAkey "$T/int.key" -CAcreateserial \
  -days 3650 -sha256 -extfile "$T/ext.cnf" -extensions other -out "$T/other.pem"
openssl req -x509 -new -key "$T/fake.key" -subj "/CN=metadata.azure.com" -days 3650 -sha256 \
  -extensions leaf -config "$T/ext.cnf" -out "$T/fake.pem"
sign() { # signer-cert signer-key output extra-flags...
  c=$1; k=$2; o=$3; shift 3
  openssl cms -sign -binary -nodetach -md sha256 -in content.json -signer "$c" -inkey "$k" -outform DER "$@" \
    | base64 -w 76 > "$o"
}
rm -f ./*.srl
sign "$T/leaf.pem" "$T/leaf.key" noattr.pkcs7.b64 -noattr
sign "$T/leaf.pem" "$T/leaf.key" attrs.pkcs7.b64
sign "$T/fake.pem" "$T/fake.key" selfsigned.pkcs7.b64 -noattr
sign "$T/other.pem" "$T/other.key" othername.pkcs7.b64 -noattr
