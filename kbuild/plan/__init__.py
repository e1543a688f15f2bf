"""plan: each step's backend on the spin (requirements, options, the runtime
module that runs it), the server's own needs for the enabled endpoints, and
the spins themselves."""
