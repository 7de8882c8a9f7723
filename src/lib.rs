pub mod cli;
pub mod imaging;
