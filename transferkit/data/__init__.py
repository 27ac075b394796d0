"""Reading, checking and splitting image folders."""
