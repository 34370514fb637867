//! Apple App Attest: verifying an attestation object (CBOR, x5c chain to the App Attest root, nonce, key id, app id, counter, environment).
