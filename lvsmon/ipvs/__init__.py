"""IPVS table model, pure diff, and the backends that read and write the kernel's table."""
