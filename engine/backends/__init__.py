"""Engine backends behind one small ABC."""
