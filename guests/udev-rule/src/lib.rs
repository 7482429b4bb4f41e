//! Placeholder: being written.
use devsieve_sdk::prelude::*;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {}

pub struct UdevRule;
impl Handler for UdevRule {
    const NAME: &'static str = "udev-rule";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    type Config = Config;
    fn needs(_: &Config) -> Result<Requirements, HandlerError> {
        Ok(Requirements::none())
    }
    fn select(_: &Config, _: Device<'_>) -> bool {
        false
    }
}
export_handler!(UdevRule);
