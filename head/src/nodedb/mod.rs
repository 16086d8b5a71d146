//! The node database (`nodes.conf`): model, profile merge, store, hostlists.
