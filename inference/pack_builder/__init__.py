"""Model pack builders. The only code in FirstLook that imports torch and nncf."""
