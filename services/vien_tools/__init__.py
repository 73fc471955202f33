"""Tools on top of the mesh: the `vien` command line (cli/), retrieval evaluation (eval/), model building and
export (build/). They may import the foundation (`vien`) and every service package; nothing imports them."""
