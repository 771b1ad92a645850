"""Certificates for network staff: the certs/ layout, CRL-checked trust, mTLS to RabbitMQ, rotation.

The modules, in the order a reader meets them:

    purpose       the certificate profiles (tls-client, signing, encryption) that exclude each other
    errors        typed refusals: CertificateError(file, what, code, reason), KeyFileModeError
    files         reading and writing PEM/DER, key modes (0600), atomic writes
    trust         TrustStore: anchors, intermediates, CRLs; verify() through pyOpenSSL X509Store
    layout        CertsDir: where everything lives, the live/previous pointers, the lock
    generation    one generation of this node's material, fully checked
    hybrid        the pq-hybrid KEM key statement (why a signed side-file, and its format)
    peers         peers' public material, current and previous
    rotation      rotate / rollback / repair with a write-ahead journal; SIGHUP to the daemon
    install       pre-flight checks for what a CA or a peer sent
    csr           new keys and certificate requests in staging
    status        every certificate and CRL with its state (jgw certs status)
    tls           stdlib ssl contexts for pika, EXTERNAL login check, failure messages
    keyring_trust the keyring's per-message trust hook over TrustStore
    material      load_node_material(): everything the daemon needs, in one checked snapshot
    devca/devinit a throw-away development CA (DEVELOPMENT ONLY)

The daemon's entry point is ``gateway.pki.material.load_node_material``.

Security: reads and writes the node's certs directory only; talks to a broker only in
``tls.check_login``. pyOpenSSL is used for X509Store verification alone (no callbacks), stdlib ssl
for TLS, so MemoryDenyWriteExecute=yes holds.
"""
