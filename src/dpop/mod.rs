//! DPoP (RFC 9449): sessions bound to a key that never leaves the device.
//! A proof is a short JWT signed by that key for one request.
