"""The node library: message types and wire format (`msgs`), transport (`io`), time
synchronisation (`sync`), the per-bundle pipeline (`pipeline`) and the node (`node`: the
socket-free core and the live process around it). No CLI and no dataset formats live here."""
