//! Google Play Integrity: decrypting and verifying an integrity token locally (A256KW + A256GCM JWE around an ES256 JWS) and checking its verdicts.
