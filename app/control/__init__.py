"""Control plane: desired membership, one lifecycle owner per replica, health probing."""
