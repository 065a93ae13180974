"""End-to-end encrypted shared memory: the coordinator stores ciphertext, clients hold the keys."""
