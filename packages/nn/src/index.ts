// Filled in by its roadmap issue; see README.md for what this package will hold.
export {};
