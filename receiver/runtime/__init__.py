"""Runtime: the receiver's processes (a host with its door and its workers, in one process or
several) and their periodic jobs; the one place everything is wired."""
