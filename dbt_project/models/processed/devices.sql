with devices as (
    select * from {{ ref('stg_devices') }}
),

deidentified as (
    select
        {{ hmac_sha256('device_key') }} as device_pseudo_id,
        manufacturer,
        manufacturer_model_name,
        software_versions
    from devices
)

select * from deidentified
