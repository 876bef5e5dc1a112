#!/usr/bin/env bash
# Generates a throwaway certificate set for TLS tests and local trials, with
# openssl only (no network, no other tool):
#
#   compose/tls-certs.sh DIR
#
# writes into DIR (created when missing; existing files of these names are
# replaced):
#   ca.crt        a self-signed CA ("walbus test CA"), ca.key its key
#   server.crt    signed by the CA for localhost / 127.0.0.1 / ::1 (subjectAltName),
#   server.key    serverAuth; for PostgreSQL, nats-server, mosquitto, redis
#   client.crt    signed by the CA, CN = $WALBUS_TLS_CLIENT_CN (default "walbus":
#   client.key    PostgreSQL's `cert` authentication maps the CN to the role), clientAuth
#   other-ca.crt  a second, unrelated CA: trusting it instead of ca.crt must fail
#   other-client.crt / other-client.key  a client certificate signed by other-ca
#
# Keys are EC P-256 and mode 0600; certificates are valid for 30 days.
# Never use these for anything but tests: the CA key sits next to them.
set -euo pipefail

dir=${1:?usage: compose/tls-certs.sh DIR}
cn=${WALBUS_TLS_CLIENT_CN:-walbus}
command -v openssl >/dev/null || { echo "tls-certs.sh: openssl not found (apt-get install openssl)" >&2; exit 1; }
mkdir -p "$dir"
cd "$dir"
umask 077

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

ca() {  # NAME SUBJECT
  key "$1.key"
  openssl req -x509 -new -key "$1.key" -sha256 -days 30 -subj "$2" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$1.crt" 2>/dev/null
}

leaf() {  # NAME CA SUBJECT EXTENSIONS
  key "$1.key"
  openssl req -new -key "$1.key" -subj "$3" -out "$1.csr" 2>/dev/null
  printf '%s\n' "$4" >"$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.crt" -CAkey "$2.key" -CAcreateserial -sha256 \
    -days 30 -extfile "$1.ext" -out "$1.crt" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}

ca ca "/CN=walbus test CA"
ca other-ca "/CN=walbus other test CA"
leaf server ca "/CN=localhost" \
  "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1"
leaf client ca "/CN=$cn" \
  "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
leaf other-client other-ca "/CN=$cn" \
  "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
rm -f ./*.srl
# Certificates are public; keys stay 0600.
chmod 644 ./*.crt
openssl verify -CAfile ca.crt server.crt client.crt >/dev/null \
  || { echo "tls-certs.sh: the generated certificates do not verify" >&2; exit 1; }
echo "$dir"
