//! Exports `devsieve:handler/discovery` at a version the agent does not
//! speak, as a handler built against a future SDK would.
#![allow(unsafe_code)] // generated ABI glue

wit_bindgen::generate!({
    inline: "
        package devsieve:handler@9.0.0;
        interface discovery {
            metadata: func() -> string;
        }
        world handler {
            export discovery;
        }
    ",
});

struct Future;

impl exports::devsieve::handler::discovery::Guest for Future {
    fn metadata() -> String {
        "from the future".into()
    }
}

export!(Future);
