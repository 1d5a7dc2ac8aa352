"""Who a bearer token speaks for: one of the ledger's own tokens (adapters/storage/
tokens.py), or a JWT of the product's sign-in (Supabase, an OIDC provider), verified
here. adapters/http/auth.py turns the answer into the API's roles and problems."""
